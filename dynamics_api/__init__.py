"""dynamics_api package."""
