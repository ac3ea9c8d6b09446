"""Which device the arena lives on and how much memory it has free right now.

torch is imported only when a CUDA device is asked for, so `import vram` stays light.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vram.errors import DeviceUnavailable, InvalidDevice

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
MEMINFO_PATH = Path("/proc/meminfo")


@dataclass(frozen=True)
class Device:
    """A parsed device: `kind` is "cpu" or "cuda"; `index` the GPU ordinal (0 for cpu)."""

    kind: str
    index: int = 0

    @property
    def is_cuda(self) -> bool:
        """True for a CUDA device."""
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_cuda else "cpu"


def parse_device(device: str) -> Device:
    """`"cpu"`, `"cuda"` or `"cuda:N"` as a Device; anything else raises InvalidDevice."""
    match = _DEVICE.match(device.strip().lower()) if isinstance(device, str) else None
    if match is None:
        raise InvalidDevice(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu" and index is not None:
        raise InvalidDevice(f"device 'cpu' takes no index, got {device!r}")
    return Device(kind, int(index or 0))


def host_available_bytes(meminfo_path: Path = MEMINFO_PATH) -> int:
    """Host memory the kernel can hand out without swapping (MemAvailable), in bytes.

    MemAvailable, not MemFree: it counts reclaimable page cache, which is what an allocation can
    really get. Falls back to sysconf's available physical pages where /proc is absent.
    """
    try:
        for line in meminfo_path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                value, unit = line.split()[1:3]
                if unit.lower() != "kb":
                    raise DeviceUnavailable(f"unexpected MemAvailable unit {unit!r} in {meminfo_path}")
                return int(value) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError) as exc:
        raise DeviceUnavailable(f"cannot tell how much host memory is available: {exc}") from exc


def import_torch_cuda(device: Device):
    """torch, after checking that it is installed and that `device` is a usable GPU."""
    try:
        import torch
    except ImportError as exc:
        raise DeviceUnavailable(f"device {device} needs PyTorch, which is not installed") from exc
    if not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {device} asked for, but CUDA is not available to PyTorch")
    count = torch.cuda.device_count()
    if device.index >= count:
        raise DeviceUnavailable(f"device {device} asked for, but only {count} CUDA device(s) exist")
    return torch


def available_bytes(device: Device) -> int:
    """Free memory on `device` now: MemAvailable on the host, cudaMemGetInfo's free on a GPU."""
    if not device.is_cuda:
        return host_available_bytes()
    torch = import_torch_cuda(device)
    free_bytes, _total_bytes = torch.cuda.mem_get_info(device.index)
    return int(free_bytes)
