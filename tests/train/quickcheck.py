"""A quick greedy-decoding check of a trained small model on an MLLMU-layout world.

Not the project's evaluator (that lives in steerkit.evaluate): just enough to measure the vanilla
targets of issue #3. Classification: the first alphanumeric character of the greedy answer equals
the option letter. Generation: the ground-truth sentence's value (after "is") appears in the answer.
Cloze: the fill appears in the answer. Refusal: ``steerkit.data.prompts.is_refusal``.

Run as a script: ``python tests/train/quickcheck.py CHECKPOINT WORLD_ROOT [forget_ratio]``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any, Sequence

from steerkit.data.mllmu import eval_items
from steerkit.data.prompts import is_refusal

MAX_NEW = {"classification": 3, "generation": 24, "cloze": 8, "refusal": 12}


def _first_alnum(text: str) -> str:
    return next((c for c in text if c.isalnum()), "")


def _value(sentence: str) -> str:
    s = sentence.strip().rstrip(".")
    return s.split(" is ", 1)[1] if " is " in s else s


def score(item: Any, answer: str) -> bool:
    if item.task == "classification":
        return _first_alnum(answer).upper() == item.answer.strip().upper()
    if item.task == "generation":
        return _value(item.answer).lower() in answer.lower()
    if item.task == "cloze":
        return item.answer.strip().lower() in answer.lower()
    should_refuse = is_refusal(item.answer)
    return is_refusal(answer) == should_refuse


def run_items(session: Any, items: Sequence[Any], batch_size: int = 64) -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = []
    by_task: dict[str, list[Any]] = defaultdict(list)
    for it in items:
        by_task[it.task].append(it)
    for task, group in by_task.items():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            answers = session.generate([x.prompt for x in chunk], [x.image for x in chunk], MAX_NEW[task])
            out.extend(zip(chunk, answers))
    return out


def check(session: Any, root: str, forget_ratio: int = 10,
          splits: Sequence[str] = ("forget", "test", "retain", "utility", "refusal"),
          tasks: Sequence[str] = ("classification", "generation", "cloze"),
          max_per_cell: int | None = None) -> dict[str, Any]:
    """Accuracy per (split, task, modality), refusal rates on profile questions and on Refusal_Set."""
    acc: dict[str, float] = {}
    refusal_rate: dict[str, float] = {}
    examples: dict[str, list[tuple[str, str, str]]] = {}
    for split in splits:
        items = eval_items(root, split, forget_ratio, tasks=None if split == "refusal" else tasks)
        if max_per_cell:
            cells: dict[tuple, list] = defaultdict(list)
            for it in items:
                cells[(it.task, it.modality, is_refusal(it.answer))].append(it)
            # an even stride over each cell, so every person is represented
            items = [it for c in cells.values() for it in c[::max(1, -(-len(c) // max_per_cell))]]
        results = run_items(session, items)
        cells_ok: dict[str, list[bool]] = defaultdict(list)
        cells_ref: dict[str, list[bool]] = defaultdict(list)
        for it, ans in results:
            if split == "refusal":
                kind = "must_refuse" if is_refusal(it.answer) else "must_comply"
                key = f"refusal/{kind}/{it.modality}"
                cells_ref[key].append(is_refusal(ans))
                cells_ok[key].append(score(it, ans))
            else:
                key = f"{split}/{it.task}/{it.modality}"
                cells_ok[key].append(score(it, ans))
                cells_ref[f"{split}/{it.modality}"].append(is_refusal(ans))
            if not score(it, ans):
                examples.setdefault(key, [])
                if len(examples[key]) < 3:
                    examples[key].append((it.prompt.split("\n")[0], it.answer, ans))
        acc.update({k: sum(v) / len(v) for k, v in cells_ok.items()})
        refusal_rate.update({k: sum(v) / len(v) for k, v in cells_ref.items()})
    return {"accuracy": acc, "refusal_rate": refusal_rate, "errors": examples}


def format_result(res: dict[str, Any]) -> str:
    lines = ["accuracy:"]
    lines += [f"  {k:42s} {v * 100:6.1f} %" for k, v in sorted(res["accuracy"].items())]
    lines.append("refusal rate:")
    lines += [f"  {k:42s} {v * 100:6.1f} %" for k, v in sorted(res["refusal_rate"].items())]
    lines.append("some errors:")
    for k, v in sorted(res["errors"].items()):
        for q, gt, ans in v:
            lines.append(f"  {k}: {q!r} gt={gt!r} got={ans!r}")
    return "\n".join(lines)


if __name__ == "__main__":
    from steerkit.models.loading import load_pretrained
    from steerkit.session import ModelSession

    model, processor, tokenizer = load_pretrained(sys.argv[1], loader=None)
    sess = ModelSession.from_objects(model, processor, tokenizer)
    ratio = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    print(format_result(check(sess, sys.argv[2], ratio)))
