"""Side-by-side reports of several named EvalResults: JSON, markdown, per-item jsonl, gate diagnostics.

Why this module exists: every comparison steerkit makes (vanilla vs steered, a lambda sweep, the
GA/NPO benchmark) is "the same items, several methods", so one report shape serves them all.
Files are written atomically (temp file in the same folder, then ``os.replace``) so an interrupted
run never leaves a half-written results.json that a later script would trust.

Gate diagnostics matter because the gate is where MLLMEraser fails first (a gate that cannot tell
forget from retain prompts steers both); the AUC here is computed from ranks, without sklearn.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from steerkit.evaluate.metrics import HEADLINE, PERCENT_METRICS, REFUSAL_BREAKDOWN
from steerkit.evaluate.runner import EvalResult

FORMAT = "steerkit.eval"
FORMAT_VERSION = 1
SPLIT_ORDER = ("forget", "test", "retain", "utility", "refusal", "val_forget", "val_retain")
MODALITY_ORDER = ("vqa", "qa")
TASK_ORDER = ("classification", "generation", "cloze", "refusal")
POSITIVE_SPLITS = ("forget", "test", "val_forget")  # the gate should be ~1 here
NEGATIVE_SPLITS = ("retain", "utility", "val_retain", "refusal")  # and ~0 here
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SHORT = {"accuracy": "acc%", "refusal_rate": "refusal%", "rougeL": "R-L", "rouge1": "R-1",
         "rouge2": "R-2", "gate_mean": "gate", "refused_must_refuse": "must-refuse refused%",
         "refused_must_comply": "must-comply refused%"}
Results = Mapping[str, EvalResult]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _ordered(keys: Iterable[str], order: Sequence[str]) -> list[str]:
    keys = set(keys)
    return [k for k in order if k in keys] + sorted(keys - set(order))


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(gate on a positive > gate on a negative), ties counted half (Mann-Whitney U / n_p n_n).

    1.0: the gate separates perfectly; 0.5: no better than chance. None when a side is empty.
    """
    pos, neg = _finite(positive), _finite(negative)
    if not pos or not neg:
        return None
    pooled = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(pooled):  # average 1-based ranks over runs of tied values
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        avg_rank = (i + j) / 2 + 1
        rank_sum += avg_rank * sum(label for _, label in pooled[i:j + 1])
        i = j + 1
    n_p, n_n = len(pos), len(neg)
    return (rank_sum - n_p * (n_p + 1) / 2) / (n_p * n_n)


def _quantile(sorted_vals: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_vals) - 1)  # linear interpolation, numpy's default
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def gate_stats(values: Iterable[float]) -> dict[str, Any]:
    """Mean, spread, quantiles and the share of negative gates (a negative gate flips the steer)."""
    vals = sorted(_finite(values))
    if not vals:
        return {"n": 0}
    n, mu = len(vals), sum(vals) / len(vals)
    out: dict[str, Any] = {"n": n, "mean": mu,
                           "std": math.sqrt(sum((v - mu) ** 2 for v in vals) / n),
                           "min": vals[0], "max": vals[-1]}
    out.update({f"q{round(q * 100):02d}": _quantile(vals, q) for q in QUANTILES})
    out["frac_negative"] = sum(v < 0 for v in vals) / n
    return out


def _aucs(values: Mapping[str, Sequence[float]]) -> dict[str, float | None]:
    return {f"{p}_vs_{n}": auc(values[p], values[n])
            for p in POSITIVE_SPLITS if p in values for n in NEGATIVE_SPLITS if n in values}


def gate_diagnostics(result: EvalResult) -> dict[str, Any] | None:
    """Per-split gate statistics and AUCs of forget-like vs retain-like splits (None: no gates).

    Also split by modality: a gate fitted on image prompts can misfire on text-only ones (large or
    negative values), which the pooled numbers hide.
    """
    if not result.has_gate:
        return None
    gated = [r for r in result.records if r.gate is not None]
    splits = _ordered({r.split for r in gated}, SPLIT_ORDER)
    values = {s: result.gate_values(s) for s in splits}
    by_mod: dict[str, dict[str, list[float]]] = {}
    for r in gated:
        by_mod.setdefault(r.modality, {}).setdefault(r.split, []).append(float(r.gate or 0.0))  # gated: not None
    mods = _ordered(by_mod, MODALITY_ORDER)
    return {"splits": {s: gate_stats(values[s]) for s in splits}, "auc": _aucs(values),
            "by_modality": {m: {"splits": {s: gate_stats(by_mod[m][s])
                                           for s in _ordered(by_mod[m], SPLIT_ORDER)},
                                "auc": _aucs(by_mod[m])} for m in mods}}


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so the JSON is strict (other languages' parsers reject NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def compare(results: Results, *, include_records: bool = False) -> dict[str, Any]:
    """The machine-readable comparison: metrics, metadata and gate diagnostics per method."""
    body = {}
    for name, res in results.items():
        entry: dict[str, Any] = {"metrics": res.metrics, "meta": res.meta, "gate": gate_diagnostics(res)}
        if include_records:
            entry["records"] = [r.to_dict() for r in res.records]
        body[name] = entry
    return _clean({"format": FORMAT, "format_version": FORMAT_VERSION,
                   "methods": list(results), "results": body})


def write_json(path: str | os.PathLike, results: Results, *, include_records: bool = False) -> Path:
    text = json.dumps(compare(results, include_records=include_records), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def load_json(path: str | os.PathLike) -> dict[str, EvalResult]:
    """Read a file from ``write_json`` back into named EvalResults (records only if they were saved)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={doc.get('format')!r})")
    return {name: EvalResult.from_dict(entry) for name, entry in doc["results"].items()}


def write_items_jsonl(path: str | os.PathLike, results: Results) -> Path:
    """One JSON line per (method, item), for diffing answers and auditing scores by hand."""
    lines = [json.dumps(_clean({"method": name, **rec.to_dict()}), ensure_ascii=False)
             for name, res in results.items() for rec in res.records]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def fmt(metric: str, value: Any) -> str:
    """Percent metrics with one decimal, ROUGE and gates with three, missing as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.1f}" if metric in PERCENT_METRICS else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]], right_from: int) -> str:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if k >= right_from else c.ljust(w)
                                 for k, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if k >= right_from else "-" * (w + 2)
                          for k, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def task_columns(task: str, refusal: bool = True) -> list[str]:
    head = HEADLINE.get(task, "accuracy")
    if task == "refusal":
        return [head, *REFUSAL_BREAKDOWN]
    return [head] + (["refusal_rate"] if refusal and head != "refusal_rate" else [])


def markdown_table(results: Results, task: str, metrics: Sequence[str] | None = None) -> str:
    """Rows split x modality, columns metric x method (methods adjacent so they compare at a glance)."""
    metrics = list(metrics or task_columns(task))
    names = list(results)
    keys = {(s, m) for r in results.values() for s, tasks in r.metrics.items()
            for m in tasks.get(task, {})}
    header = ["split", "modality", "n"] + [f"{n} {SHORT.get(m, m)}" for m in metrics for n in names]
    rows = []
    for split in _ordered({s for s, _ in keys}, SPLIT_ORDER):
        for mod in _ordered({m for s, m in keys if s == split}, MODALITY_ORDER):
            cells = [r.cell(split, task, mod) for r in results.values()]
            ns = sorted({c["n"] for c in cells if c})
            row = [split, mod, "/".join(str(n) for n in ns)]
            row += [fmt(m, c.get(m) if c else None) for m in metrics for c in cells]
            rows.append(row)
    return _table(header, rows, right_from=2)


def markdown_gate_table(results: Results) -> str:
    """Gate mean / median / 5-95 % range / negative share per split, then the AUC lines."""
    diags = {n: gate_diagnostics(r) for n, r in results.items()}
    present: dict[str, dict[str, Any]] = {n: d for n, d in diags.items() if d}
    if not present:
        return ""
    header = ["method", "split", "n", "mean", "q05", "median", "q95", "neg%"]
    rows = []
    for name, d in present.items():
        for split, st in d["splits"].items():
            rows.append([name, split, str(st["n"])] + [fmt("gate", st.get(k)) for k in
                        ("mean", "q05", "q50", "q95")] + [fmt("accuracy", 100 * st["frac_negative"])])
    text = _table(header, rows, right_from=2)
    aucs = [f"- {name} AUC {pair.replace('_vs_', ' vs ')}: {fmt('auc', v)}"
            + "".join(f", {m} {fmt('auc', md['auc'].get(pair))}"
                      for m, md in d["by_modality"].items())
            for name, d in present.items() for pair, v in d["auc"].items()]
    return text + ("\n\n" + "\n".join(aucs) if aucs else "")


def markdown_report(results: Results, title: str = "Evaluation") -> str:
    """All task tables plus the gate section, as one markdown document."""
    tasks = _ordered({t for r in results.values() for s in r.metrics.values() for t in s}, TASK_ORDER)
    parts = [f"# {title}", "", "Methods: " + ", ".join(results) + ". Accuracy and refusal in "
             "percent, ROUGE F1 on 0-1 (MLLMU-Bench units)."]
    for task in tasks:
        cols = ", ".join(SHORT.get(m, m) for m in task_columns(task))
        parts += ["", f"## {task} ({cols})", "", markdown_table(results, task)]
    gates = markdown_gate_table(results)
    if gates:
        parts += ["", "## gate (steering gate value per prompt; AUC 1.0 = forget fully separated)",
                  "", gates]
    return "\n".join(parts) + "\n"


def write_report(out_dir: str | os.PathLike, results: Results, *, plots: bool = True,
                 title: str = "Evaluation") -> dict[str, Path]:
    """Write results.json, report.md, items.jsonl and (optionally) the PNG plots into ``out_dir``."""
    out = Path(out_dir)
    paths = {"json": write_json(out / "results.json", results),
             "markdown": atomic_write_text(out / "report.md", markdown_report(results, title)),
             "items": write_items_jsonl(out / "items.jsonl", results)}
    if plots:
        from steerkit.evaluate import plots as P

        paths.update(P.plot_all(out, results))
    return paths
