"""Model-agnostic evaluation: score answers MLLMU-Bench style and report methods side by side.

Nothing here loads a model: ``evaluate`` takes a ``generate_fn`` that wraps whatever session the
caller has (vanilla, steered, fine-tuned), so every method is scored by the same code.
``steerkit.evaluate.plots`` (matplotlib) is imported only when plots are written.
"""

from __future__ import annotations

from steerkit.evaluate.metrics import aggregate, classification_correct, cloze_correct, rouge
from steerkit.evaluate.report import (auc, compare, gate_diagnostics, load_json, markdown_report,
                                      markdown_table, write_items_jsonl, write_json, write_report)
from steerkit.evaluate.runner import DEFAULT_MAX_NEW_TOKENS, EvalResult, ItemRecord, evaluate

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS", "EvalResult", "ItemRecord", "aggregate", "auc",
    "classification_correct", "cloze_correct", "compare", "evaluate", "gate_diagnostics",
    "load_json", "markdown_report", "markdown_table", "rouge", "write_items_jsonl", "write_json",
    "write_report",
]
