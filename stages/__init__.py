"""Model stages and their backends, and the motion planner. Imports only `vram`."""
