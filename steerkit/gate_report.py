"""How often the gate opens on retain prompts, against the recipe's ``gate.retain_open_rate`` target.

The prototype and ridge gates are calibrated so that at most ``retain_open_rate`` of calibration
retain prompts get a gate above 0. That promise is only worth something on people the calibration
never saw (issue #19: the shipped recipe, target 1 %, opened on 10 of 90 retain people of a new
world). ``extract`` records the rate reached on held-out retain people in each gate layer's fit
statistics (``gate.fit.<layer>.retain_open_heldout``); ``eval`` measures it again on its retain
splits and warns when it exceeds the target. "Open" means c > OPEN_ABOVE: the calibration sets closed
prompts to exactly 0, and a steered run recomputes c in the model's dtype, so rounding must not count.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

RETAIN_SPLITS = ("retain", "utility", "val_retain")  # prompts about people the gate must leave alone
OPEN_ABOVE = 1e-3  # c below this moves the residual by under 0.1 % of lambda * r: no steering


def open_rate(values: Iterable[float] | Any) -> Optional[float]:
    """Share of gate values above OPEN_ABOVE, rounded to 4 digits (None for no values)."""
    vals = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    return round(sum(v > OPEN_ABOVE for v in vals) / len(vals), 4) if vals else None


def heldout_open_rate(gate_meta: dict) -> Optional[float]:
    """The worst held-out retain open rate over the bundle's gate layers (None: not recorded)."""
    found = [s.get("retain_open_heldout") for s in (gate_meta.get("fit") or {}).values() if isinstance(s, dict)]
    rates = [float(r) for r in found if isinstance(r, (int, float))]
    return max(rates) if rates else None


def retain_open_report(result: Any, recipe: Any, bundle: Any) -> dict:
    """Per retain split of an evaluation: n, open rate, target and the bundle's held-out rate."""
    target = getattr(recipe.gate, "retain_open_rate", None)
    parts = bundle if isinstance(bundle, (list, tuple)) else [bundle]  # composed requests: the worst part
    rates = [r for r in (heldout_open_rate(b.manifest.gate) for b in parts) if r is not None]
    heldout = max(rates) if rates else None
    splits = {}
    for split in RETAIN_SPLITS:
        values = result.gate_values(split)
        if values:
            splits[split] = {"n": len(values), "open_rate": open_rate(values)}
    return {"target": target, "heldout_at_fit": heldout, "splits": splits}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def report_lines(report: dict) -> tuple[list[str], list[str]]:
    """(lines, warnings) for the terminal: each retain split's open rate beside the target."""
    target, lines, warnings = report["target"], [], []
    for split, row in report["splits"].items():
        lines.append(f"gate open (c > {OPEN_ABOVE:g}) on {_pct(row['open_rate'])} of {row['n']} {split} prompts "
                     f"(target gate.retain_open_rate {_pct(target) if target is not None else 'none for this rule'}"
                     f"; held-out retain at fit {_pct(report['heldout_at_fit'])})")
        if target is not None and row["open_rate"] > target:
            warnings.append(f"warning: the gate opens on {_pct(row['open_rate'])} of {split} prompts, above its "
                            f"target {_pct(target)}: steering reaches people it should leave alone (lower "
                            "gate.retain_open_rate, or add retain data like these prompts)")
    return lines, warnings
