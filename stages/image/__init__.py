"""stages/image package."""
