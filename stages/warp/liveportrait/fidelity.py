"""Fidelity harness: reproduce every case of a LivePortrait reference-vector folder.

    python -m stages.warp.liveportrait.fidelity DIR [--threads 2] [--device cpu]

DIR holds `cases.json` and one safetensors file per case (`weights.<official key>`,
`input.*`, `intermediate.*`, `output.*`). Every case listed in cases.json is run: module cases
(F, M, W, G, stitching/retargeting MLPs) with their own config and weights, the composite C_*
cases and the E2E chain (weights taken from the files named in `weights_from`). Every stored
`intermediate.*` and `output.*` tensor is compared; the tool prints the max abs difference of
each and exits 1 if any exceeds cases.json's `recommended_tolerance` (or a case cannot run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from stages.warp.liveportrait import keypoints as kpm
from stages.warp.liveportrait.appearance import AppearanceFeatureExtractor
from stages.warp.liveportrait.checkpoints import load_strict, warm_up_vector_math
from stages.warp.liveportrait.config import (BIN_OFFSET_DEG, AppearanceConfig, MlpConfig, MotionConfig,
                                             SpadeConfig, WarpingConfig, from_mapping)
from stages.warp.liveportrait.inference import prepare_spade, prepare_warping
from stages.warp.liveportrait.motion_extractor import MotionExtractor
from stages.warp.liveportrait.retargeting import RetargetingMlp
from stages.warp.liveportrait.spade import SPADEDecoder
from stages.warp.liveportrait.warping import WarpingNetwork

REFERENCE_THREADS = 2
"""The vectors were made with 2 CPU threads; conv work splits (hence rounding) depend on it."""

DEGREE_FULL_SCALE = BIN_OFFSET_DEG
"""Degree errors are relative to the head's full scale, 97.5° (the largest |angle| 66 bins express).
Per-value relative error cannot be meant: an angle near 0° would need an error far below float32
noise (the README's own float64-vs-float32 gap, 1.2e-5°, is 1.2e-7 of full scale)."""

ANGLES = ("pitch", "yaw", "roll")
KP_INFO_FIELDS = ("kp", "exp", "t", "scale", *ANGLES)

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Tolerances:
    """Pass bounds from cases.json `recommended_tolerance` (README defaults when absent)."""

    module_abs: float = 1e-4
    composite_abs: float = 1e-4
    e2e_intermediate_abs: float = 1e-4
    e2e_images_abs: float = 5e-4
    degree_rel: float = 1e-6

    @classmethod
    def from_cases(cls, cases: Mapping[str, Any]) -> "Tolerances":
        """Read the bounds from a parsed cases.json."""
        rec = cases.get("recommended_tolerance", {})
        base = cls()
        return cls(module_abs=rec.get("module_cases_abs", base.module_abs),
                   composite_abs=rec.get("composite_cases_abs", base.composite_abs),
                   e2e_intermediate_abs=rec.get("E2E_intermediates_abs", base.e2e_intermediate_abs),
                   e2e_images_abs=rec.get("E2E_output_images_abs", base.e2e_images_abs),
                   degree_rel=rec.get("degree_tensors_rel", base.degree_rel))


@dataclass(frozen=True)
class TensorCheck:
    """One stored tensor compared with ours."""

    case: str
    name: str
    shape: tuple[int, ...]
    max_abs: float
    tol_abs: float
    ok: bool
    rel: float | None = None
    note: str = ""


class Harness:
    """Runs the cases of one vectors folder; caches networks loaded from the case files."""

    def __init__(self, folder: str | Path, device: str = "cpu", for_inference: bool = False) -> None:
        """`for_inference`: run W and G as the engine does, after inference.prepare_* rewrites."""
        warm_up_vector_math()
        self.folder = Path(folder)
        self.device = torch.device(device)
        self.for_inference = for_inference
        self.cases: dict[str, Any] = json.loads((self.folder / "cases.json").read_text())
        self.tol = Tolerances.from_cases(self.cases)
        self._networks: dict[str, nn.Module] = {}

    # -- loading ---------------------------------------------------------------------------

    def tensors(self, file: str) -> Tensors:
        """Every tensor of a case file, on the harness device."""
        return {k: v.to(self.device) for k, v in load_file(str(self.folder / file)).items()}

    def network(self, file: str) -> nn.Module:
        """The network stored in `file` (built from its case's config, loaded strictly)."""
        if file not in self._networks:
            case = next((c for c in self.cases["cases"].values() if c.get("file") == file), None)
            if case is None:
                raise KeyError(f"no case in cases.json has file {file!r}")
            with torch.device("meta"):  # no default init: the file supplies every value
                module = build_module(case)
            weights = {k.removeprefix("weights."): v for k, v in load_file(str(self.folder / file)).items()
                       if k.startswith("weights.")}
            module = load_strict(module, weights, file).to(self.device)
            rewrite = _INFERENCE_REWRITES.get(type(module)) if self.for_inference else None
            self._networks[file] = rewrite(module) if rewrite else module
        return self._networks[file]

    # -- running ---------------------------------------------------------------------------

    def run(self, name: str) -> list[TensorCheck]:
        """Run case `name` and compare every stored intermediate/output tensor."""
        case = self.cases["cases"][name]
        try:
            stored = self.tensors(case["file"])
            with torch.inference_mode():
                computed = self.compute(name, case, stored)
        except Exception as exc:  # report and carry on with the other cases
            return [TensorCheck(name, "<case>", (), float("nan"), 0.0, False, note=f"{type(exc).__name__}: {exc}")]
        return [self.compare(name, case, key, ref, computed.get(key))
                for key, ref in sorted(stored.items()) if key.startswith(("intermediate.", "output."))]

    def run_all(self) -> list[TensorCheck]:
        """Run every case listed in cases.json."""
        return [check for name in self.cases["cases"] for check in self.run(name)]

    def compute(self, name: str, case: Mapping[str, Any], stored: Tensors) -> Tensors:
        """Our values for the case's intermediate/output keys."""
        if case.get("module") != "composite":
            return run_module(self.network(case["file"]), stored)
        for prefix, runner in COMPOSITES.items():
            if name.startswith(prefix):
                return runner(self, case, stored)
        raise KeyError(f"unknown composite case {name!r} (known: {sorted(COMPOSITES)})")

    def compare(self, name: str, case: Mapping[str, Any], key: str, ref: torch.Tensor,
                ours: torch.Tensor | None) -> TensorCheck:
        """Max abs (and, for degrees, relative) difference against the tolerance for this tensor."""
        tol = self.tolerance(name, case, key)
        shape = tuple(ref.shape)
        if ours is None:
            return TensorCheck(name, key, shape, float("nan"), tol, False, note="not computed")
        if tuple(ours.shape) != shape:
            return TensorCheck(name, key, shape, float("nan"), tol, False, note=f"shape {tuple(ours.shape)}")
        diff = (ours.detach().double().cpu() - ref.double().cpu()).abs()
        max_abs = float(diff.max()) if diff.numel() else 0.0
        ok = max_abs <= tol  # False for NaN
        rel = None
        if is_degree_tensor(key, ref):
            scale = max(DEGREE_FULL_SCALE, float(ref.double().abs().max()) if ref.numel() else 0.0)
            rel = max_abs / scale
            ok = ok and rel < self.tol.degree_rel
        return TensorCheck(name, key, shape, max_abs, tol, bool(ok), rel)

    def tolerance(self, name: str, case: Mapping[str, Any], key: str) -> float:
        """The abs bound for one tensor: module, composite, E2E intermediate or E2E images."""
        if case.get("module") != "composite":
            return self.tol.module_abs
        if name.startswith("E2E"):
            return self.tol.e2e_images_abs if key.startswith("output.") else self.tol.e2e_intermediate_abs
        return self.tol.composite_abs


def is_degree_tensor(key: str, ref: torch.Tensor) -> bool:
    """Head-pose angles in degrees: `*_deg`, or a pitch/yaw/roll tensor that is not 66-bin logits."""
    last = key.rsplit(".", 1)[-1]
    return last.endswith("_deg") or (last in ANGLES and ref.shape[-1] != 66)


def build_module(case: Mapping[str, Any]) -> nn.Module:
    """An (unloaded) network for a module case, from its `module` and `config`."""
    module, config = case.get("module", ""), case.get("config", {})
    if module == "F":
        return AppearanceFeatureExtractor(from_mapping(AppearanceConfig, config, "F.config"))
    if module == "M":
        return MotionExtractor(from_mapping(MotionConfig, config, "M.config"))
    if module == "W":
        return WarpingNetwork(from_mapping(WarpingConfig, config, "W.config"))
    if module == "G":
        return SPADEDecoder(from_mapping(SpadeConfig, config, "G.config"))
    if module.startswith("S") or "StitchingRetargeting" in case.get("class", ""):
        return RetargetingMlp(from_mapping(MlpConfig, config, f"{module}.config"))
    raise KeyError(f"unknown module {module!r}")


def run_module(net: nn.Module, stored: Tensors) -> Tensors:
    """Call a network on the case inputs (one input positionally, several by name)."""
    inputs = {k.removeprefix("input."): v for k, v in stored.items() if k.startswith("input.")}
    result = net(*inputs.values()) if len(inputs) == 1 else net(**inputs)
    if isinstance(result, Mapping):
        return {f"output.{k}": v for k, v in result.items() if v is not None}
    outputs = [k for k in stored if k.startswith("output.")]
    if len(outputs) != 1:
        raise ValueError(f"network returned one tensor but the case stores {outputs}")
    return {outputs[0]: result}


def nested(stored: Tensors, prefix: str) -> Tensors:
    """Entries under `prefix.` with the prefix removed."""
    return {k[len(prefix) + 1:]: v for k, v in stored.items() if k.startswith(prefix + ".")}


def run_transform_keypoint(h: Harness, case: Mapping[str, Any], stored: Tensors) -> Tensors:
    """headpose_pred_to_degree, get_rotation_matrix and transform_keypoint per input layout."""
    out: Tensors = {}
    layouts = sorted({k[len("input."):-len(".kp")] for k in stored if k.startswith("input.") and k.endswith(".kp")})
    if "input.kp" in stored:
        layouts.append("")
    for layout in layouts:
        dot = f"{layout}." if layout else ""
        info = {n: stored[f"input.{dot}{n}"] for n in KP_INFO_FIELDS}
        degrees = [kpm.headpose_pred_to_degree(info[n]) for n in ANGLES]
        for n, deg in zip(ANGLES, degrees):
            out[f"intermediate.{dot}{n}_deg"] = deg
        out[f"intermediate.{dot}rot_mat"] = kpm.get_rotation_matrix(*degrees)
        out[f"output.{dot}kp_transformed"] = kpm.transform_keypoint(info)
    return out


def run_rotation(h: Harness, case: Mapping[str, Any], stored: Tensors) -> Tensors:
    """get_rotation_matrix on the stored angle triples."""
    return {"output.rot_mat": kpm.get_rotation_matrix(*(stored[f"input.{n}"] for n in ANGLES))}


def run_stitching(h: Harness, case: Mapping[str, Any], stored: Tensors) -> Tensors:
    """concat_feat, the stitching delta and the stitched driving keypoints."""
    net = h.network(case["weights_from"]["stitching"])
    src, drv = stored["input.kp_source"], stored["input.kp_driving"]
    return {"intermediate.feat": kpm.concat_feat(src, drv), "intermediate.delta": kpm.stitch_delta(net, src, drv),
            "output.kp_driving_new": kpm.stitching(net, src, drv)}


def run_retarget(h: Harness, case: Mapping[str, Any], stored: Tensors) -> Tensors:
    """retarget_lip and retarget_eye with their concatenated features."""
    src, lip, eye = stored["input.kp_source"], stored["input.lip_close_ratio"], stored["input.eye_close_ratio"]
    files = case["weights_from"]
    return {"intermediate.feat_lip": kpm.concat_feat(src, lip), "intermediate.feat_eye": kpm.concat_feat(src, eye),
            "output.lip_delta": kpm.retarget_lip(h.network(files["lip"]), src, lip),
            "output.eye_delta": kpm.retarget_eye(h.network(files["eye"]), src, eye)}


def run_e2e(h: Harness, case: Mapping[str, Any], stored: Tensors) -> Tensors:
    """Source → F, M → x_s; per driving frame (batch 1): x_d → stitching → W → G."""
    files = case["weights_from"]
    f_net, m_net, w_net, g_net, s_net = (h.network(files[k]) for k in ("F", "M", "W", "G", "stitching"))
    source = stored["input.source_image"]
    out: Tensors = {"intermediate.f_s": f_net(source)}
    raw = m_net(source)
    out.update({f"intermediate.M_raw.{k}": v for k, v in raw.items()})
    x_s_info = kpm.refine_kp_info(raw)
    out.update({f"intermediate.x_s_info.{k}": v for k, v in x_s_info.items()})
    out["intermediate.R_s"] = kpm.get_rotation_matrix(*(x_s_info[n] for n in ANGLES))
    x_s = kpm.transform_keypoint(x_s_info)
    out["intermediate.x_s"] = x_s

    driving = nested(stored, "input.driving")
    frames: dict[str, list[torch.Tensor]] = {}
    for i in range(driving["pitch"].shape[0]):
        info = {"kp": x_s_info["kp"], **{k: v[i:i + 1] for k, v in driving.items()}}
        x_d = kpm.transform_keypoint(info)
        x_d_stitched = kpm.stitching(s_net, x_s, x_d)
        warped = w_net(out["intermediate.f_s"], kp_driving=x_d_stitched, kp_source=x_s)
        values = {"intermediate.R_d": kpm.get_rotation_matrix(*(info[n] for n in ANGLES)),
                  "intermediate.x_d": x_d, "intermediate.stitch_delta": kpm.stitch_delta(s_net, x_s, x_d),
                  "intermediate.x_d_stitched": x_d_stitched, "output.images": g_net(warped["out"]),
                  **{f"intermediate.W.{k}": v for k, v in warped.items() if v is not None}}
        for k, v in values.items():
            frames.setdefault(k, []).append(v)
    out.update({k: torch.cat(v, dim=0) for k, v in frames.items()})
    return out


_INFERENCE_REWRITES: dict[type, Callable[[Any], nn.Module]] = {WarpingNetwork: prepare_warping,
                                                                SPADEDecoder: prepare_spade}


COMPOSITES: dict[str, Callable[[Harness, Mapping[str, Any], Tensors], Tensors]] = {
    "C_transform_keypoint": run_transform_keypoint,
    "C_rotation": run_rotation,
    "C_stitching": run_stitching,
    "C_retarget": run_retarget,
    "E2E": run_e2e,
}
"""Composite case name prefix → runner (the names of cases.json)."""


def format_report(checks: list[TensorCheck]) -> str:
    """A table of every compared tensor and a one-line verdict."""
    lines = [f"{'case':<22}{'tensor':<42}{'shape':<18}{'max|diff|':>11}{'tol':>9}  status"]
    for c in checks:
        shape = "x".join(map(str, c.shape)) or "-"
        rel = f" rel={c.rel:.1e}" if c.rel is not None else ""
        status = "ok" if c.ok else "FAIL"
        lines.append(f"{c.case:<22}{c.name:<42}{shape:<18}{c.max_abs:>11.3e}{c.tol_abs:>9.1e}  {status}{rel}"
                     + (f"  ({c.note})" if c.note else ""))
    failed = [c for c in checks if not c.ok]
    cases = len({c.case for c in checks})
    worst = max((c.max_abs for c in checks if c.ok), default=0.0)
    lines.append(f"{len(checks)} tensors in {cases} cases: "
                 + (f"{len(failed)} FAILED" if failed else f"all within tolerance (worst {worst:.3e})"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 when every tensor of every case is within tolerance, 1 otherwise, 2 on bad usage."""
    parser = argparse.ArgumentParser(prog="python -m stages.warp.liveportrait.fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="vectors folder with cases.json")
    parser.add_argument("--threads", type=int, default=REFERENCE_THREADS, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device (TF32 is disabled on CUDA)")
    parser.add_argument("--inference", action="store_true",
                        help="run W and G as the engine does (BatchNorm folded, spectral norm frozen, padded)")
    args = parser.parse_args(argv)
    if not (args.folder / "cases.json").is_file():
        print(f"error: {args.folder / 'cases.json'} not found", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    checks = Harness(args.folder, args.device, for_inference=args.inference).run_all()
    print(format_report(checks))
    print(f"ran in {time.perf_counter() - start:.1f} s on {args.device} with {args.threads} threads")
    return 0 if checks and all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
