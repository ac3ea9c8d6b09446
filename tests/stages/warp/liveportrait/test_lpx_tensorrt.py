"""TensorRT engine build: the batch profile comes from the ONNX file; a missing tensorrt is named clearly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx", reason="the profile is read from an ONNX file")
from onnx import TensorProto, helper  # noqa: E402

from stages.errors import StageInputError  # noqa: E402
from stages.warp.liveportrait.tensorrt_build import (TensorRTBuildOptions, TensorRTUnavailable,  # noqa: E402
                                                     build_engine, main, profile_shapes)

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _signature_onnx(path: Path, batch: int | str = "batch", depth: int | str = 16) -> Path:
    """An ONNX file with W+G's input/output signature (the body is irrelevant to the profile)."""
    inputs = [helper.make_tensor_value_info("feature_3d", TensorProto.FLOAT, [batch, 32, depth, 64, 64]),
              helper.make_tensor_value_info("kp_driving", TensorProto.FLOAT, [batch, 21, 3]),
              helper.make_tensor_value_info("kp_source", TensorProto.FLOAT, [batch, 21, 3])]
    output = helper.make_tensor_value_info("summed", TensorProto.FLOAT, [batch, 21, 3])
    node = helper.make_node("Add", ["kp_driving", "kp_source"], ["summed"])
    graph = helper.make_graph([node], "signature", inputs, [output])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_profile_spans_the_chunk_batches(tmp_path: Path) -> None:
    """Each input gets (min, opt, max) shapes whose batch follows the options and whose other axes are the file's."""
    shapes = profile_shapes(_signature_onnx(tmp_path / "m.onnx"),
                            TensorRTBuildOptions(min_batch=1, opt_batch=12, max_batch=24))
    assert shapes == {"feature_3d": ((1, 32, 16, 64, 64), (12, 32, 16, 64, 64), (24, 32, 16, 64, 64)),
                      "kp_driving": ((1, 21, 3), (12, 21, 3), (24, 21, 3)),
                      "kp_source": ((1, 21, 3), (12, 21, 3), (24, 21, 3))}


def test_fixed_batch_file_only_takes_its_own_batch(tmp_path: Path) -> None:
    """A file exported with batch 4 accepts a 4/4/4 profile and rejects a range, naming the option."""
    path = _signature_onnx(tmp_path / "fixed.onnx", batch=4)
    same = TensorRTBuildOptions(min_batch=4, opt_batch=4, max_batch=4)
    assert profile_shapes(path, same)["kp_source"] == ((4, 21, 3),) * 3
    with pytest.raises(StageInputError) as err:
        profile_shapes(path, TensorRTBuildOptions(min_batch=1, opt_batch=4, max_batch=8))
    assert err.value.field.endswith("max_batch") and "fixed batch of 4" in err.value.message


def test_dynamic_non_batch_axis_is_rejected(tmp_path: Path) -> None:
    """Only the batch axis may be dynamic: a symbolic depth is refused with the input named."""
    with pytest.raises(StageInputError) as err:
        profile_shapes(_signature_onnx(tmp_path / "d.onnx", depth="depth"), TensorRTBuildOptions())
    assert "feature_3d" in err.value.message and "axis 2" in err.value.message


@pytest.mark.parametrize("kwargs", [dict(min_batch=0), dict(min_batch=4, opt_batch=2), dict(opt_batch=32),
                                    dict(workspace_bytes=0)])
def test_bad_options_are_rejected(kwargs: dict) -> None:
    """Batches out of order, below 1, or a non-positive workspace raise StageInputError."""
    with pytest.raises(StageInputError) as err:
        TensorRTBuildOptions(**kwargs)
    assert err.value.field.startswith("warp.liveportrait.tensorrt.")


def test_missing_onnx_file_is_named(tmp_path: Path) -> None:
    """Building from a file that does not exist names that file."""
    with pytest.raises(StageInputError) as err:
        build_engine(tmp_path / "absent.onnx", tmp_path / "e.plan")
    assert "absent.onnx" in err.value.message


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here; the missing-module path cannot run")
def test_missing_tensorrt_is_a_clear_error(tmp_path: Path, capsys) -> None:
    """Without the tensorrt module, a build raises TensorRTUnavailable naming it, and the CLI exits 2."""
    onnx_path = _signature_onnx(tmp_path / "m.onnx")
    with pytest.raises(TensorRTUnavailable) as err:
        build_engine(onnx_path, tmp_path / "e.plan")
    assert err.value.name == "tensorrt" and "'tensorrt'" in str(err.value)
    assert isinstance(err.value, ImportError) and not (tmp_path / "e.plan").exists()
    assert main([str(onnx_path), str(tmp_path / "e.plan")]) == 2
    assert "tensorrt" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT, reason="tensorrt is not installed (needs an NVIDIA GPU node)")
def test_builds_fp16_engine_with_fp32_sampler(lp_dir: Path, tmp_path: Path) -> None:
    """From the small W+G export an engine builds (fp16 with the sampler pinned to fp32 where the flag exists)."""
    import tensorrt as trt

    from stages.warp.liveportrait.export import export_warp_generator, load_vectors_folder

    W, G, inputs = load_vectors_folder(lp_dir)
    onnx_path = export_warp_generator(W, G, tmp_path / "wg.onnx", inputs=inputs).path
    weakly_typed = hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11 builds strongly typed networks only
    options = TensorRTBuildOptions(fp16=weakly_typed, min_batch=1, opt_batch=2, max_batch=4)
    result = build_engine(onnx_path, tmp_path / "wg.plan", options)
    assert result.engine_bytes > 0 and (result.fp32_layers > 0) == weakly_typed
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(result.engine_path.read_bytes())
    assert engine is not None
    assert tuple(engine.get_tensor_profile_shape("feature_3d", 0)[2]) == (4, 4, 16, 64, 64)
