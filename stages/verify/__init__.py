"""stages/verify package."""
