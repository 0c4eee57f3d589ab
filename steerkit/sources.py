"""Recipe data sources -> ContrastItem lists (jsonl files, MLLMU-layout folders, the embedded world).

Every path is resolved against the recipe's folder. The embedded world is generated and cached on
first use, keyed by its seed and size, exactly like the embedded models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .data.items import ContrastItem, EvalItem
from .errors import DataError, Problem


def world_root(world_spec: Any) -> Path:
    from .models.embedded import ensure_world

    return Path(ensure_world(world_spec.seed, world_spec.n_profiles))


def _from_eval(items: list[EvalItem]) -> list[ContrastItem]:
    return [ContrastItem(prompt=i.prompt, image=i.image, target=i.answer, id=i.id, source=f"{i.split}:{i.task}")
            for i in items]


def source_path(source: Any, resolve: Callable[[str], Path], world_spec: Any) -> Path | None:
    """The file or folder a source reads (for hashing), or None."""
    if source.kind == "jsonl":
        return resolve(source.path)
    if source.kind == "mllmu":
        return resolve(source.path)
    if source.contrast is not None:
        return world_root(world_spec) / "contrast" / contrast_file(source)
    return world_root(world_spec)


def contrast_file(source: Any) -> str:
    name = source.contrast
    if name in ("forget_answer", "forget_refuse"):
        return f"forget_{source.forget_ratio}_{name.split('_')[1]}.jsonl"
    return f"{name}.jsonl"


def load_eval_items(source: Any, resolve: Callable[[str], Path], world_spec: Any, seed: int = 0) -> list[EvalItem]:
    from .data.mllmu import eval_items

    root = resolve(source.path) if source.kind == "mllmu" else world_root(world_spec)
    items = only_ids(eval_items(root, source.split, source.forget_ratio, source.tasks, source.modalities, seed=seed),
                     source, f"{source.kind} split {source.split!r}")
    return items[: source.limit] if source.limit else items


def only_ids(items: list, source: Any, where: str) -> list:
    """The items of the people ``source.ids`` names (all items without ``ids``). An id with no item is an
    error: a typo would otherwise make a forget request silently forget nobody."""
    ids = getattr(source, "ids", None)
    if not ids:
        return items
    have = {it.id for it in items}
    missing = [i for i in ids if i not in have]
    if missing:
        from .errors import choices_hint

        raise DataError("a source names people it does not hold", [Problem(
            f"ids {missing} have no item in the {where}", None, None, None, "ids",
            choices_hint(missing[0], sorted(have)[:40]), "SK606")])
    keep = set(ids)
    return [it for it in items if it.id in keep]


def load_source(source: Any, resolve: Callable[[str], Path], world_spec: Any, seed: int = 0) -> list[ContrastItem]:
    """Read one recipe data source as contrast items (EvalItems keep their answer as the target)."""
    from .data.contrast import read_contrast_jsonl

    if source.kind == "jsonl":
        items = read_contrast_jsonl(resolve(source.path))
    elif source.kind == "world" and source.contrast is not None:
        path = world_root(world_spec) / "contrast" / contrast_file(source)
        if not path.exists():
            raise DataError(f"the embedded world has no contrast file '{source.contrast}'", [Problem(
                f"missing {path}", str(path), None, None, "contrast",
                "use recall, erasure, forget_answer or forget_refuse", "SK601")])
        items = read_contrast_jsonl(path)
    else:
        items = _from_eval(load_eval_items(source, resolve, world_spec, seed))
    if source.kind != "mllmu" and not (source.kind == "world" and source.contrast is None):
        items = only_ids(items, source, f"{source.kind} source")  # eval splits were filtered above
    if not items:
        raise DataError("a data source is empty", [Problem(f"no items in {source.kind} source", None, None, None,
                                                           None, "check the path/split", "SK602")])
    return items[: source.limit] if source.limit else items
