"""vortexd: the Vortex daemon, its one-shot renderer and its control client."""
