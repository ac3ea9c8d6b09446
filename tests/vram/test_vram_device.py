"""Device strings, host capacity, and the CUDA path (skipped with a reason when there is no GPU)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from vram import (MIB, Arena, ArenaPlan, Device, DeviceUnavailable, InvalidDevice, Region, host_available_bytes,
                  parse_device)


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


needs_cuda = pytest.mark.skipif(not _cuda_available(), reason="needs PyTorch with a CUDA device")


@pytest.mark.parametrize("text, expected", [("cpu", Device("cpu")), ("cuda", Device("cuda", 0)),
                                            ("cuda:3", Device("cuda", 3)), (" CUDA:1 ", Device("cuda", 1))])
def test_device_strings_parse(text, expected):
    """cpu, cuda and cuda:N are understood; cuda alone means GPU 0."""
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:-1", "cpu:0", "", "cuda:0:1", None])
def test_bad_device_strings_are_refused(text):
    """Anything but cpu / cuda / cuda:N raises InvalidDevice quoting the input."""
    with pytest.raises(InvalidDevice, match="device"):
        parse_device(text)


def test_host_capacity_is_mem_available(tmp_path):
    """Host capacity is MemAvailable (not MemFree) from /proc/meminfo, in bytes."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:          100000 kB\nMemAvailable:    9000000 kB\n")
    assert host_available_bytes(meminfo) == 9_000_000 * 1024
    assert host_available_bytes() > 0


def test_importing_vram_does_not_import_torch():
    """`import vram` and a CPU arena leave torch unimported (the daemon must stay light)."""
    code = ("import sys, vram, numpy as np; a = vram.Arena.create(vram.ArenaPlan.from_budgets("
            "{'a': 4096, 'p': 4096}, pools={'p'})); a.view('a', 8, np.float32, 'x'); a.stage_pool('p').used_bytes(); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(_cuda_available(), reason="this machine has CUDA; the refusal path cannot be shown")
def test_cuda_arena_without_cuda_says_why():
    """Asking for a CUDA arena where torch or CUDA is missing raises DeviceUnavailable naming the device."""
    with pytest.raises(DeviceUnavailable, match="cuda:0"):
        Arena.create(ArenaPlan((Region("a", MIB),)), "cuda:0")


@needs_cuda
@pytest.mark.gpu
def test_cuda_arena_views_share_one_device_allocation():
    """On CUDA, views are typed slices of one uint8 tensor with stable, aligned device addresses."""
    import torch

    with Arena.create(ArenaPlan((Region("lp", 4 * MIB), Region("clip", MIB))), "cuda:0") as arena:
        weights = arena.view("lp", (1024, 512), np.float16, "w")
        embed = arena.view("clip", (256,), torch.float32, "e")
        assert weights.dtype == torch.float16 and weights.is_cuda
        for view in (weights, embed):
            assert view.untyped_storage().data_ptr() == arena.buffer.untyped_storage().data_ptr()
            assert (arena.address_of(view) - arena.base_address) % 256 == 0
        assert arena.address_of(arena.view("lp", (1024, 512), np.float16, "w")) == arena.address_of(weights)


@needs_cuda
@pytest.mark.gpu
def test_cuda_stage_pool_accounts_allocations_outside_views():
    """Tensors made inside `with arena.stage_pool(region)` are counted in that region's usage."""
    import torch

    with Arena.create(ArenaPlan.from_budgets({"flux": 64 * MIB, "kokoro": MIB}, pools={"flux", "kokoro"}), "cuda:0") as arena:
        with arena.stage_pool("flux"):
            held = torch.empty(8 * MIB, dtype=torch.uint8, device="cuda:0")
        usage = arena.usage()
        assert usage["flux"].used_bytes >= 8 * MIB and usage["kokoro"].used_bytes == 0
        del held
