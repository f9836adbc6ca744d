"""tap_dynamics package."""
