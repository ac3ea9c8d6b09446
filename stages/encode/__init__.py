"""stages/encode package."""
