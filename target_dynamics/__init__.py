"""target_dynamics package."""
