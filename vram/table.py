"""The budget table: what each region gets, its share of the device, and what is left free."""

from __future__ import annotations

from vram.plan import ArenaPlan
from vram.units import format_bytes


def _share(n_bytes: int, capacity_bytes: int) -> str:
    return f"{100.0 * n_bytes / capacity_bytes:5.1f}%" if capacity_bytes > 0 else "    -"


def format_budget_table(plan: ArenaPlan, capacity_bytes: int, *, device: str = "") -> str:
    """The whole plan as a fixed-width table: every region's budget and share of `capacity_bytes`,
    then the arena total, the headroom, the capacity and what stays free (negative when it does not fit).
    """
    rows: list[tuple[str, int, str]] = [(r.name, r.budget_bytes, r.description) for r in plan.regions]
    name_w = max(12, *(len(r.name) for r in plan.regions))
    padding_bytes = plan.total_bytes - sum(r.budget_bytes for r in plan.regions)
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
    out.append(line("total", plan.total_bytes, "one allocation"))
    out.append(line("headroom", plan.headroom_bytes, "kept free beside the arena"))
    out.append(line("required", plan.required_bytes))
    out.append(line("capacity", capacity_bytes, "free on the device before allocating", share=False))
    verdict = "fits" if free_bytes >= 0 else f"DOES NOT FIT: short by {format_bytes(-free_bytes)}"
    out.append(line("free", free_bytes, verdict))
    return "\n".join(out)
