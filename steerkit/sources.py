"""Recipe data sources -> ContrastItem lists (jsonl files, MLLMU-layout folders, the embedded world).

A world or mllmu source reads an evaluation split (``split``), a world contrast file (``contrast``) or a
forget request (``request``: fine-tuning pairs only, :mod:`steerkit.data.request`).

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
    if getattr(source, "contrast", None) is not None:
        return world_root(world_spec) / "contrast" / contrast_file(source)
    return world_root(world_spec)


def contrast_file(source: Any) -> str:
    name = source.contrast
    if name in ("forget_answer", "forget_refuse"):
        return f"forget_{source.forget_ratio}_{name.split('_')[1]}.jsonl"
    return f"{name}.jsonl"


def split_configs(split: str, forget_ratio: int) -> list[str]:
    """The MLLMU config folders a split reads (``steerkit.data.mllmu.eval_items``'s layout rules)."""
    forget, retain = f"forget_{forget_ratio}", f"retain_{100 - forget_ratio}"
    return {"forget": [forget], "retain": [retain], "utility": ["Retain_Set"], "test": ["Test_Set", forget],
            "val_forget": ["Val_Set", forget], "val_retain": ["Val_Set", retain],
            "refusal": ["Refusal_Set"]}[split]


def empty_source_problem(source: Any, full: Path) -> str | None:
    """What makes an existing jsonl file or mllmu folder certainly yield nothing, found without parsing
    it (``validate`` reports it, so a source that validates does not fail at ``extract``), or None."""
    if source.kind == "jsonl":
        try:
            with open(full, "rb") as f:
                if not any(line.strip() for line in f):
                    return f"jsonl file {full} has no rows"
        except OSError as exc:
            return f"cannot read {full}: {exc.strerror or exc}"
        return None
    for name in split_configs(source.split, source.forget_ratio):
        if not any((full / name).glob("*.parquet")):
            return f"split '{source.split}' reads config folder {name}/, which {full} lacks (or holds no *.parquet)"
    return None


def load_eval_items(source: Any, resolve: Callable[[str], Path], world_spec: Any, seed: int = 0) -> list[EvalItem]:
    from .data.mllmu import eval_items

    root = resolve(source.path) if source.kind == "mllmu" else world_root(world_spec)
    # refusal rows carry their own task ("refusal"), never one of source.tasks: filtering by those
    # emptied every refusal source (issue #19), so the split ignores them, as eval does
    tasks = None if source.split == "refusal" else source.tasks
    items = only_ids(eval_items(root, source.split, source.forget_ratio, tasks, source.modalities, seed=seed),
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


def _why_empty(source: Any, resolve: Callable[[str], Path], world_spec: Any) -> str:
    """Why a source yielded nothing: no rows at all, or rows none of which pass its filters."""
    if source.kind == "jsonl" or getattr(source, "contrast", None) is not None:
        return f"{source_path(source, resolve, world_spec)} has no rows"
    from .data.mllmu import eval_items

    root = resolve(source.path) if source.kind == "mllmu" else world_root(world_spec)
    every = eval_items(root, source.split, source.forget_ratio, None, None)
    if not every:
        return f"split '{source.split}' (forget_ratio {source.forget_ratio}) of {root} has no rows"
    kept = sorted({(i.task, i.modality) for i in every})
    filters = f"modalities {list(source.modalities)}" if source.split == "refusal" else \
        f"tasks {list(source.tasks)} and modalities {list(source.modalities)}"
    return (f"none of the {len(every)} items of split '{source.split}' in {root} match {filters}; "
            f"it holds (task, modality) {kept}")


def load_source(source: Any, resolve: Callable[[str], Path], world_spec: Any, seed: int = 0,
                key: str | None = None) -> list[ContrastItem]:
    """Read one recipe data source as contrast items (EvalItems keep their answer as the target).

    ``key``: the source's key path in the recipe (e.g. ``gate.retain.1``), so an empty source is
    reported at its line (``LoadedRecipe.locate``)."""
    from .data.contrast import read_contrast_jsonl

    if source.kind == "jsonl":
        items = read_contrast_jsonl(resolve(source.path))
    elif getattr(source, "request", None) is not None:
        from .data.request import request_items

        root = resolve(source.path) if source.kind == "mllmu" else world_root(world_spec)
        items = request_items(root, source.request, source.forget_ratio, source.configs, source.refusal,
                              source.modalities, source.tasks)
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
        raise DataError("a data source is empty", [Problem(
            f"the {source.kind} source yields no items: {_why_empty(source, resolve, world_spec)}", None, None,
            None, key, "point it at data that has rows, or widen its split, tasks or modalities", "SK602")])
    return items[: source.limit] if source.limit else items
