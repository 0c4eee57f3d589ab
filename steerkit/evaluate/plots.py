"""PNG plots for evaluation reports: metric bars, gate histograms, forgetting-vs-utility scatter.

Why this module exists: a steering result is judged by three pictures (did forget drop while retain
held? does the gate separate forget from retain prompts? where does each method sit on the
forgetting/utility trade-off?). Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas,
never pyplot, so plotting has no global state, needs no display and cannot switch a user's backend.
Files are written atomically, like every report file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

from steerkit.evaluate.metrics import HEADLINE, PERCENT_METRICS, pooled
from steerkit.evaluate.report import (MODALITY_ORDER, SPLIT_ORDER, TASK_ORDER, Results, _ordered,
                                      atomic_write_bytes)

LABEL = {"accuracy": "accuracy (%)", "rougeL": "ROUGE-L F1", "rouge1": "ROUGE-1 F1",
         "rouge2": "ROUGE-2 F1", "refusal_rate": "refusal rate (%)"}
CHANCE = {"classification": 25.0}  # four options A-D


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig


def save_png(fig, path: str | os.PathLike) -> Path:
    """Render ``fig`` to PNG bytes in memory, then write them atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _tasks(results: Results) -> list[str]:
    return _ordered({t for r in results.values() for s in r.metrics.values() for t in s}, TASK_ORDER)


def plot_metric_bars(results: Results, path: str | os.PathLike,
                     tasks: Sequence[str] | None = None) -> Path:
    """One panel per task: the task's headline metric per split x modality, one bar per method."""
    tasks = list(tasks or _tasks(results))
    names = list(results)
    fig = _new_figure(max(7.5, 1.1 * len(names) + 6.5), 3.2 * max(1, len(tasks)))
    axes = fig.subplots(max(1, len(tasks)), 1, squeeze=False)[:, 0]
    for ax, task in zip(axes, tasks):
        metric = HEADLINE.get(task, "accuracy")
        groups = [(s, m) for s in _ordered({s for r in results.values() for s, t in r.metrics.items()
                                            if task in t}, SPLIT_ORDER)
                  for m in _ordered({m for r in results.values()
                                     for m in r.metrics.get(s, {}).get(task, {})}, MODALITY_ORDER)]
        width = 0.8 / max(1, len(names))
        for k, (name, res) in enumerate(results.items()):
            values = []
            for split, mod in groups:
                cell = res.cell(split, task, mod)
                value = cell.get(metric) if cell else None
                values.append(float("nan") if value is None else value)
            xs = [g + (k - (len(names) - 1) / 2) * width for g in range(len(groups))]
            bars = ax.bar(xs, values, width=width, label=name)
            fmt = "%.0f" if metric in PERCENT_METRICS else "%.2f"
            ax.bar_label(bars, fmt=fmt, fontsize="x-small", padding=1)  # zero bars stay readable
        if task in CHANCE and metric == "accuracy":
            ax.axhline(CHANCE[task], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(range(len(groups)), [f"{s}\n{m}" for s, m in groups])
        ax.set_ylim(0, 110 if metric in PERCENT_METRICS else 1.1)  # headroom for the value labels
        ax.set_ylabel(LABEL.get(metric, metric))
        ax.set_title(f"{task}: {LABEL.get(metric, metric)} by split and modality")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_png(fig, path)


def plot_gate_histograms(results: Results, path: str | os.PathLike, bins: int = 30) -> Path | None:
    """Per method, overlaid histograms of the gate value for each split (None: no gates recorded)."""
    gated = {n: r for n, r in results.items() if r.has_gate}
    if not gated:
        return None
    fig = _new_figure(7.0, 3.4 * len(gated))
    axes = fig.subplots(len(gated), 1, squeeze=False)[:, 0]
    for ax, (name, res) in zip(axes, gated.items()):
        splits = _ordered({r.split for r in res.records if r.gate is not None}, SPLIT_ORDER)
        every = res.gate_values()
        lo, hi = min(every), max(every)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]  # shared bins: comparable bars
        for split in splits:
            vals = res.gate_values(split)
            ax.hist(vals, bins=edges, alpha=0.45, label=f"{split} (n={len(vals)})")
        for ref in (0.0, 1.0):
            ax.axvline(ref, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("gate value c(h) = <h, g>  (target: 1 on forget, 0 elsewhere)")
        ax.set_ylabel("prompts")
        ax.set_title(f"{name}: gate values per split")
        ax.legend(fontsize="small", loc="best")
    return save_png(fig, path)


def tradeoff_points(results: Results, task: str = "classification", metric: str | None = None,
                    forget_split: str = "forget", utility_split: str = "retain",
                    modality: str | None = None) -> dict[str, tuple[float, float]]:
    """(utility, forget) per method, modalities pooled by n unless one is named; incomplete skipped."""
    metric = metric or HEADLINE.get(task, "accuracy")
    points = {}
    for name, res in results.items():
        x = pooled(res.metrics.get(utility_split, {}).get(task, {}), metric, modality)
        y = pooled(res.metrics.get(forget_split, {}).get(task, {}), metric, modality)
        if x is not None and y is not None:
            points[name] = (x, y)
    return points


def plot_tradeoff(results: Results, path: str | os.PathLike, task: str = "classification",
                  metric: str | None = None, forget_split: str = "forget",
                  utility_split: str = "retain", modality: str | None = None) -> Path | None:
    """Scatter, one point per method: x = utility (retain) score, y = forget score.

    Good methods sit bottom-right: high utility kept, forget score driven down.
    """
    metric = metric or HEADLINE.get(task, "accuracy")
    points = tradeoff_points(results, task, metric, forget_split, utility_split, modality)
    if not points:
        return None
    top = 100.0 if metric in PERCENT_METRICS else 1.0
    fig = _new_figure(6.0, 5.0)
    ax = fig.subplots()
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=60, label=name, zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize="small",
                    annotation_clip=False)
    if task in CHANCE and metric == "accuracy":
        ax.axhline(CHANCE[task], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(-0.03 * top, top * 1.12)  # room for labels of points at 0 or at the top
    ax.set_ylim(-0.03 * top, top * 1.08)
    unit = LABEL.get(metric, metric)
    which = f", {modality}" if modality else ""
    ax.set_xlabel(f"utility: {utility_split} {task} {unit}{which}  (higher is better)")
    ax.set_ylabel(f"forgetting: {forget_split} {task} {unit}{which}  (lower is better)")
    ax.set_title(f"Forgetting vs utility ({task})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return save_png(fig, path)


def plot_all(out_dir: str | os.PathLike, results: Results) -> Mapping[str, Path]:
    """Every plot that the results support, into ``out_dir``; returns {kind: path}."""
    out = Path(out_dir)
    paths: dict[str, Path] = {"metrics_png": plot_metric_bars(results, out / "metrics.png")}
    gates = plot_gate_histograms(results, out / "gates.png")
    if gates:
        paths["gates_png"] = gates
    for task in _tasks(results):
        if task == "refusal":
            continue
        p = plot_tradeoff(results, out / f"tradeoff_{task}.png", task=task)
        if p:
            paths[f"tradeoff_{task}_png"] = p
    return paths
