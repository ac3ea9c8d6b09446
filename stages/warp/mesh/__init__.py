"""Mesh warp: the embedded warp backend (landmark-driven dense warp + synthesised mouth interior)."""

from stages.warp.mesh.backend import MeshWarpBackend, PreparedMeshWarp

__all__ = ["MeshWarpBackend", "PreparedMeshWarp"]
