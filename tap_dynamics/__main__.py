from tap_dynamics.tap import main

main()
