"""stages/motion package."""
