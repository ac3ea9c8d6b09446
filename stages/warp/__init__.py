"""The warp stage: backends that turn an actor and a motion plan into video frames.

The contract is in `stages.warp.base`; backends are looked up by name in `stages.registry`
("mesh" → stages.warp.mesh, the embedded CPU backend), so importing this package never pulls
in a backend's heavy dependencies.
"""

from stages.warp.base import PreparedWarp, WarpBackend

__all__ = ["PreparedWarp", "WarpBackend"]
