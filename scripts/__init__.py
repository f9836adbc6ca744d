"""Developer scripts: the demo and the Meltano plugin definitions."""
