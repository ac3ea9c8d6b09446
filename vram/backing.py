"""The one allocation behind an arena, and typed views carved out of it at fixed byte offsets.

Host memory: a single numpy uint8 buffer whose start is page-aligned. CUDA: a single
`torch.empty(..., dtype=uint8)` on the device; torch is imported only on that path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import mmap
import os
import sys
from typing import Any, Iterator

import numpy as np

from vram.device import Device, import_torch_cuda
from vram.errors import DeviceUnavailable, InvalidView

# Linux's MADV_POPULATE_WRITE (uapi value, stable); Python 3.11's mmap module does not name it yet.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)

POPULATE_STEP_BYTES = 8 << 20
"""Bytes committed per madvise call: 4 huge pages. One call over a whole buffer holds the
process's memory-map lock throughout, and every other thread's mmap (a large numpy array, an
extension module being imported) waits for it: a thread allocating beside a 2 GiB populate
stalled 0.4–24 s here, beside 8 MiB steps ≤ 21 ms. The calls' own cost is nothing (~100 per
video slab)."""

# numpy dtype names that have a torch counterpart of the same name and size.
_TORCH_NAMES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
                "complex64", "complex128")


def _is_torch_dtype(dtype: Any) -> bool:
    return type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype"


def populate_in_steps(buffer: np.ndarray) -> Iterator[int]:
    """Commit the pages under `buffer` (contiguous) in address order, POPULATE_STEP_BYTES at a
    time: in the kernel where it can (MADV_POPULATE_WRITE, Linux ≥ 5.14, through ctypes, which
    lets go of the GIL), else by writing zeros. Yields how many of its bytes are committed after
    each step. MemoryError when the machine cannot give the pages; OSError for other failures."""
    step, page = POPULATE_STEP_BYTES, mmap.PAGESIZE
    start = buffer.ctypes.data
    # Only whole pages inside the buffer: an edge page shared with other memory is touched on first use.
    first, last = -(-start // page) * page, (start + buffer.nbytes) // page * page
    if sys.platform == "linux" and last > first and _madvise_populate(first, min(step, last - first)):
        for address in range(first + step, last, step):
            yield address - start
            _madvise_populate(address, min(step, last - address))
        yield buffer.nbytes
        return
    flat = buffer.reshape(-1)
    for offset in range(0, flat.size, step):  # fallback (old kernel): numpy lets go of the GIL per block
        flat[offset : offset + step] = 0
        yield min(offset + step, flat.size)
    yield buffer.nbytes


@functools.lru_cache(maxsize=1)
def _madvise():
    """libc's madvise, typed (looked up once: find_library runs ldconfig)."""
    madvise = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _madvise_populate(address: int, length: int) -> bool:
    """MADV_POPULATE_WRITE on [address, address+length); False where the kernel does not know it."""
    if _madvise()(address, length, _MADV_POPULATE_WRITE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EINVAL:
        return False
    if code in (errno.ENOMEM, errno.EFAULT, errno.EAGAIN):
        raise MemoryError(f"could not commit {length} B of host memory: {os.strerror(code)}")
    raise OSError(code, f"committing host memory failed: {os.strerror(code)}")


class HostBacking:
    """One anonymous memory mapping viewed as a numpy uint8 buffer (page-aligned by construction).

    `prefault` commits every page now: Linux overcommits, so without it the pages would only be
    taken on first touch, i.e. mid-slot, where running out of memory is far worse than at start-up.
    """

    def __init__(self, n_bytes: int, *, prefault: bool) -> None:
        # mmap rather than np.empty: the mapping starts on a page boundary, it can be advised
        # (huge pages, populate), and it is returned to the OS as soon as the last view is dropped.
        self._map = mmap.mmap(-1, max(n_bytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            # Transparent huge pages: ~500x fewer page-table entries for the 800 MiB slabs, fewer TLB
            # misses in the warp loop, and a ~10x faster prefault. Only advice: ignore a kernel without THP.
            try:
                self._map.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        self.buffer = np.frombuffer(self._map, dtype=np.uint8)[:n_bytes]
        if prefault and n_bytes:
            self._populate()

    def _populate(self) -> None:
        """Commit every page (populate_in_steps)."""
        try:
            for _ in populate_in_steps(self.buffer):
                pass
        except (MemoryError, OSError) as exc:
            raise DeviceUnavailable(f"could not commit {self.buffer.nbytes} B of host memory "
                                    f"for the arena: {exc}") from exc

    @property
    def base_address(self) -> int:
        """Address of the first byte of the arena."""
        return int(self.buffer.ctypes.data)

    @staticmethod
    def resolve_dtype(dtype: Any) -> tuple[np.dtype, int]:
        """`dtype` (numpy-like, or a torch dtype with a numpy twin) as a numpy dtype and its size."""
        if _is_torch_dtype(dtype):
            dtype = str(dtype).removeprefix("torch.")
        try:
            resolved = np.dtype(dtype)
        except TypeError as exc:
            raise InvalidView(f"dtype {dtype!r} has no host (numpy) equivalent") from exc
        return resolved, resolved.itemsize

    def carve(self, offset_bytes: int, n_bytes: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A `shape`/`dtype` view of bytes [offset, offset + n_bytes) of the buffer (never a copy)."""
        view = self.buffer[offset_bytes:offset_bytes + n_bytes].view(dtype)
        view.shape = shape  # assigning .shape raises rather than silently copying
        return view

    @staticmethod
    def address(view: np.ndarray) -> int:
        """Address of a view's first byte."""
        return int(view.ctypes.data)


class CudaBacking:
    """One uint8 tensor on a CUDA device; views are `narrow`ed and re-typed slices of it."""

    def __init__(self, n_bytes: int, device: Device) -> None:
        self._torch = import_torch_cuda(device)
        # torch.empty on CUDA goes through cudaMalloc (via the caching allocator), which commits
        # the memory immediately, so there is nothing to prefault.
        self.buffer = self._torch.empty(n_bytes, dtype=self._torch.uint8, device=str(device))

    @property
    def base_address(self) -> int:
        """Device address of the first byte of the arena."""
        return int(self.buffer.data_ptr())

    def resolve_dtype(self, dtype: Any) -> tuple[Any, int]:
        """`dtype` (a torch dtype, or a numpy-like name torch also has) as a torch dtype and its size."""
        if not _is_torch_dtype(dtype):
            try:
                name = np.dtype(dtype).name
            except TypeError:
                name = str(dtype)
            if name not in _TORCH_NAMES and name != "bfloat16":
                raise InvalidView(f"dtype {dtype!r} has no torch equivalent")
            dtype = getattr(self._torch, name)
        return dtype, int(dtype.itemsize)

    def carve(self, offset_bytes: int, n_bytes: int, shape: tuple[int, ...], dtype: Any):
        """A `shape`/`dtype` tensor view of bytes [offset, offset + n_bytes) of the buffer."""
        # Region and view offsets are 256-byte aligned, so re-typing the byte slice is always legal.
        return self.buffer.narrow(0, offset_bytes, n_bytes).view(dtype).view(shape)

    @staticmethod
    def address(view: Any) -> int:
        """Device address of a view's first byte."""
        return int(view.data_ptr())
