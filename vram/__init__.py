"""Device memory: the static arena, its regions and budgets, and video-slab leases."""
