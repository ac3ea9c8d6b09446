"""The budget tables: what each region gets and what is left free; what each stage measured."""

from __future__ import annotations

from collections.abc import Mapping

from vram.plan import POOL, ArenaPlan, Region
from vram.units import format_bytes


def _share(n_bytes: int, capacity_bytes: int) -> str:
    return f"{100.0 * n_bytes / capacity_bytes:5.1f}%" if capacity_bytes > 0 else "    -"


def _note(region: Region) -> str:
    if region.kind != POOL:
        return region.description
    return "stage pool" + (f": {region.description}" if region.description else "")


def format_budget_table(plan: ArenaPlan, capacity_bytes: int, *, device: str = "") -> str:
    """The whole plan as a fixed-width table: every region's budget and share of `capacity_bytes`,
    then the arena total, the headroom, the capacity and what stays free (negative when it does not fit).
    """
    rows = [(r.name, r.budget_bytes, _note(r)) for r in plan.regions]
    name_w = max(12, *(len(r.name) for r in plan.regions))
    padding_bytes = plan.total_bytes - sum(r.budget_bytes for r in plan.regions if r.kind != POOL)
    free_bytes = capacity_bytes - plan.required_bytes

    def line(name: str, n_bytes: int, note: str = "", share: bool = True) -> str:
        share_text = _share(n_bytes, capacity_bytes) if share else "      "
        text = f"{name:<{name_w}}  {format_bytes(n_bytes):>10}  {n_bytes:>16,d}  {share_text}"
        return f"{text}  {note}".rstrip()

    where = f" on {device}" if device else ""
    out = [f"arena budget{where}",
           f"{'region':<{name_w}}  {'budget':>10}  {'bytes':>16}  {'share':>6}",
           "-" * (name_w + 38)]
    out += [line(name, n_bytes, note) for name, n_bytes, note in rows]
    out.append("-" * (name_w + 38))
    if padding_bytes:
        out.append(line("(alignment)", padding_bytes, "regions start on 256 B boundaries"))
    out.append(line("total", plan.total_bytes, "one allocation (the view regions)"))
    if plan.pool_bytes:
        out.append(line("pools", plan.pool_bytes, "drawn by the stage pools, each capped at its budget"))
    out.append(line("headroom", plan.headroom_bytes, "kept free beside the arena"))
    out.append(line("required", plan.required_bytes))
    out.append(line("capacity", capacity_bytes, "free on the device before allocating", share=False))
    verdict = "fits" if free_bytes >= 0 else f"DOES NOT FIT: short by {format_bytes(-free_bytes)}"
    out.append(line("free", free_bytes, verdict))
    return "\n".join(out)


def format_stage_table(plan: ArenaPlan, used_bytes: Mapping[str, int], peak_bytes: Mapping[str, int]) -> str:
    """Each stage-pool region's budget, what its stage holds between calls (resident), the peak it
    measured (warm-up, then the high-water mark) and what that leaves; a stage without a figure
    did not load."""
    pools = [r for r in plan.regions if r.kind == POOL]
    name_w = max(12, *(len(r.name) for r in pools)) if pools else 12
    out = [f"{'stage region':<{name_w}}  {'budget':>10}  {'resident':>10}  {'peak':>10}  {'left':>10}",
           "-" * (name_w + 50)]
    for region in pools:
        if region.name not in peak_bytes:
            out.append(f"{region.name:<{name_w}}  {format_bytes(region.budget_bytes):>10}  {'-':>10}  {'-':>10}  "
                       f"{'-':>10}  not loaded")
            continue
        peak, left = peak_bytes[region.name], region.budget_bytes - peak_bytes[region.name]
        verdict = "fits" if left >= 0 else f"OVER BUDGET by {format_bytes(-left)}"
        out.append(f"{region.name:<{name_w}}  {format_bytes(region.budget_bytes):>10}  "
                   f"{format_bytes(used_bytes.get(region.name, 0)):>10}  {format_bytes(peak):>10}  "
                   f"{format_bytes(left):>10}  {verdict}")
    return "\n".join(out)
