"""python -m target_dynamics."""

from target_dynamics.target import main

main()
