"""Byte counts as people read them (imports nothing: every vram module may use it)."""

from __future__ import annotations


def format_bytes(n_bytes: int) -> str:
    """`n_bytes` in binary units with three significant figures (e.g. `3.50 GiB`, `-812 MiB`)."""
    sign = "-" if n_bytes < 0 else ""
    value = float(abs(n_bytes))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{sign}{int(value)} B"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{sign}{value:.{digits}f} {unit}"
