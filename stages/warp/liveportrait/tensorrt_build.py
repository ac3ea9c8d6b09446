"""Build a serialized TensorRT engine from the W+G ONNX file (GPU nodes with `tensorrt` installed).

One optimisation profile covers the chunk batches the warp stage renders (min/opt/max over the
dynamic batch axis; every other dimension is fixed by the ONNX file). With fp16 the layers of
the gather sampler (`grid_sample3d/…` nodes, see export.py) stay in fp32: fp16 cannot hold the
voxel positions of a 64-wide axis finer than 1/32, which would visibly jitter the warp.
The fp16 path uses the FP16 builder flag of TensorRT 10 (weak typing); TensorRT 11
removed it, and there an fp16 request is refused with that reason (fp32 builds work).
`tensorrt` is imported only when a build runs; without it the build raises
`TensorRTUnavailable`, which names the missing module.

CLI: `python -m stages.warp.liveportrait.tensorrt_build MODEL.onnx ENGINE.plan [--fp16] ...`
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from stages.errors import StageInputError
from stages.warp.liveportrait.export import SAMPLER_SCOPE

OPTIONS_FIELD = "warp.liveportrait.tensorrt"

Shape = tuple[int, ...]


class TensorRTUnavailable(ModuleNotFoundError):
    """The `tensorrt` Python module cannot be imported on this machine."""


@dataclass(frozen=True)
class TensorRTBuildOptions:
    """Engine build settings: precision, the batch range of the profile, builder workspace."""

    fp16: bool = True
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 16
    workspace_bytes: int = 4 * 2 ** 30
    fp32_sampler: bool = True
    """Keep the gather sampler's layers in fp32 when fp16 is on."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise StageInputError(f"{OPTIONS_FIELD}.opt_batch", "need 1 <= min_batch <= opt_batch <= max_batch",
                                  min_batch=self.min_batch, opt_batch=self.opt_batch, max_batch=self.max_batch)
        if self.workspace_bytes <= 0:
            raise StageInputError(f"{OPTIONS_FIELD}.workspace_bytes", "must be positive",
                                  workspace_bytes=self.workspace_bytes)


@dataclass(frozen=True)
class EngineBuildResult:
    """What `build_engine` wrote."""

    engine_path: Path
    engine_bytes: int
    build_s: float
    fp16: bool
    fp32_layers: int
    profile: dict[str, tuple[Shape, Shape, Shape]]


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module, or TensorRTUnavailable naming it (and how to get it) when it cannot load."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise TensorRTUnavailable(
            "building a TensorRT engine needs the Python module 'tensorrt' (NVIDIA TensorRT, "
            f"`pip install tensorrt` on a CUDA node); it cannot be imported here: {exc}", name="tensorrt") from exc


def profile_shapes(onnx_path: str | Path, options: TensorRTBuildOptions) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Input name → (min, opt, max) shapes: the batch axis from `options`, every other axis from the file.

    A file exported with a fixed batch only accepts a profile whose three batches equal it.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    batches = (options.min_batch, options.opt_batch, options.max_batch)
    shapes = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        rest = []
        for axis, dim in enumerate(dims[1:], start=1):
            if not dim.HasField("dim_value"):
                raise StageInputError(f"{OPTIONS_FIELD}.onnx", f"input {value.name!r} axis {axis} is dynamic; "
                                      "only the batch axis may be", input=value.name)
            rest.append(dim.dim_value)
        if dims and dims[0].HasField("dim_value") and set(batches) != {dims[0].dim_value}:
            raise StageInputError(f"{OPTIONS_FIELD}.max_batch",
                                  f"the ONNX file has a fixed batch of {dims[0].dim_value}; export with a dynamic "
                                  "batch or set min/opt/max_batch to it", input=value.name, batches=batches)
        shapes[value.name] = tuple((b, *rest) for b in batches)
    return shapes


def build_engine(onnx_path: str | Path, engine_path: str | Path,
                 options: TensorRTBuildOptions = TensorRTBuildOptions()) -> EngineBuildResult:
    """Parse the ONNX file, build an engine with one batch profile and write it serialized to `engine_path`."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise StageInputError(f"{OPTIONS_FIELD}.onnx", f"{onnx_path} does not exist")
    shapes = profile_shapes(onnx_path, options)
    trt = import_tensorrt()
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None:  # required before TensorRT 10, ignored (deprecated) after
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # also resolves external data beside the file
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise StageInputError(f"{OPTIONS_FIELD}.onnx", "TensorRT cannot parse the ONNX file", errors=errors)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    fp32_layers = 0
    if options.fp16:
        fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
        if fp16_flag is None:
            raise StageInputError(f"{OPTIONS_FIELD}.fp16",
                                  f"TensorRT {trt.__version__} has no FP16 builder flag (from TensorRT 11 every "
                                  "network is strongly typed: precision comes from the ONNX file); build with "
                                  "fp16=False or convert the file to mixed precision first",
                                  tensorrt_version=trt.__version__)
        config.set_flag(fp16_flag)
        if options.fp32_sampler:
            fp32_layers = _pin_sampler_fp32(trt, network)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StageInputError(f"{OPTIONS_FIELD}.onnx", "TensorRT failed to build the engine (see its log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(serialized)  # IHostMemory exposes the buffer protocol: no extra copy
    tmp.replace(engine_path)  # a reader never sees half an engine
    return EngineBuildResult(engine_path=engine_path, engine_bytes=engine_path.stat().st_size,
                             build_s=time.perf_counter() - start, fp16=options.fp16,
                             fp32_layers=fp32_layers, profile=shapes)


def _pin_sampler_fp32(trt: ModuleType, network) -> int:
    """Force fp32 compute and float outputs on every layer parsed from a `grid_sample3d/` node; returns the count."""
    floats = {trt.float32, trt.float16}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if SAMPLER_SCOPE not in layer.name:
            continue
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outputs:
            continue  # index arithmetic: integer, unaffected by fp16
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 on success, 2 on bad input or when tensorrt is missing."""
    parser = argparse.ArgumentParser(prog="python -m stages.warp.liveportrait.tensorrt_build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path)
    parser.add_argument("engine", type=Path)
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--min-batch", type=int, default=1)
    parser.add_argument("--opt-batch", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--workspace-gib", type=float, default=4.0)
    parser.add_argument("--fp16-sampler", action="store_true", help="let the sampler run in fp16 too")
    args = parser.parse_args(argv)
    try:
        options = TensorRTBuildOptions(fp16=args.fp16, min_batch=args.min_batch, opt_batch=args.opt_batch,
                                       max_batch=args.max_batch, workspace_bytes=int(args.workspace_gib * 2 ** 30),
                                       fp32_sampler=not args.fp16_sampler)
        result = build_engine(args.onnx, args.engine, options)
    except (StageInputError, TensorRTUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {result.engine_path} ({result.engine_bytes / 2**20:.1f} MiB) in {result.build_s:.0f} s; "
          f"fp16 {result.fp16}, {result.fp32_layers} sampler layers pinned to fp32; profile {result.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
