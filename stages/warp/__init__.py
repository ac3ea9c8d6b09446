"""stages/warp package."""
