"""Generate the synthetic MLLMU-style world on disk, in the real MLLMU-Bench layout.

Why the real layout: one loader (:mod:`steerkit.data.mllmu`) then serves both this world and the
released benchmark, and the reference ``eval.py`` could read these files unchanged. The world is a
pure function of its arguments: every random draw comes from a numpy Generator seeded with
``[seed, stream]``, PNG and parquet writing are deterministic, and ``world.json`` holds no timing,
so the same seed gives byte-identical files. It is built in a temporary sibling folder and renamed
into place, so a reader never sees a half-written world.

Layout (MLLMU names first, then steerkit extras)::

    Full_Set/ forget_{5,10,15}/ retain_{95,90,85}/ Test_Set/ (2 shards) Retain_Set/ ft_Data/
    Val_Set/ ft_Extra/ Refusal_Set/ contrast/*.jsonl contrast/images/*.png world.json README.md

Forget splits are independent draws per ratio, as in the released data (``nested=True`` makes them
nested). ``Retain_Set`` holds "celebrities" (IDs ``C001``...) standing in for real people: the model
learns them from ``ft_Extra``, never from ``ft_Data``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steerkit.bench import extras, parquet_io as pio
from steerkit.bench import templates as T
from steerkit.bench.portraits import draw_portrait, png_bytes, transform
from steerkit.bench.readme import world_readme
from steerkit.bench.profiles import (
    Profile,
    metadata_json,
    private_entries,
    profile_columns,
    sample_people,
    task_columns,
    train_entries,
)
from steerkit.errors import DataError, Problem

LAYOUT_VERSION = 1
_STREAMS = {"people": 1, "test": 2, "val": 3, "split": 4, "objects": 5, "refusal": 6, "contrast": 7}


@dataclass(frozen=True)
class WorldInfo:
    """What :func:`generate_world` wrote (also saved, minus ``seconds``, as ``world.json``)."""

    root: Path
    seed: int
    n_profiles: int
    n_celebrities: int
    forget_ids: dict[int, tuple[str, ...]]
    rows: dict[str, int]  # config folder -> parquet rows
    train_pairs: dict[str, int]  # ft_Data / ft_Extra -> flattened (Question, Answer) pairs
    contrast: dict[str, int]  # contrast jsonl file -> lines
    seconds: float = field(default=0.0, compare=False)


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream]])


def _split_ids(ids: list[str], ratios: tuple[int, ...], rng: np.random.Generator,
               nested: bool) -> dict[int, list[str]]:
    """Per-profile forget draws (OCT data_split.py: shuffle, take the first int(N/100 * n))."""
    out = {}
    shared = rng.permutation(len(ids))
    for r in ratios:
        order = shared if nested else rng.permutation(len(ids))
        take = set(int(i) for i in order[: int(r / 100 * len(ids))])
        out[r] = [pid for i, pid in enumerate(ids) if i in take]  # keep Full_Set row order
    return out


def _eval_row(p: Profile, png: bytes, wording: str) -> dict[str, Any]:
    return {"image": pio.image_struct(png, f"{p.id}.png"), "ID": p.id, **profile_columns(p),
            **task_columns(p, lambda a: T.Wording(a).cell(wording))}  # fmt: skip


def _transformed_row(p: Profile, png_list: list[tuple[bytes, str]], wording: str) -> dict[str, Any]:
    images = [pio.image_struct(b, path) for b, path in png_list]
    return {"images": images, "ID": p.id, **profile_columns(p),
            **task_columns(p, lambda a: T.Wording(a).cell(wording))}  # fmt: skip


def _check_args(out: Path, overwrite: bool, n_profiles: int, ratios: tuple[int, ...],
                train_variants: int) -> None:
    problems = []
    if out.exists() and not out.is_dir():
        problems.append(Problem("output path exists and is not a folder", path=str(out),
                                code="SK610", hint="choose another output folder"))  # fmt: skip
    elif out.exists() and any(out.iterdir()) and not overwrite:
        problems.append(Problem("output folder exists and is not empty", path=str(out),
                                code="SK610",
                                hint="pass overwrite=True or choose another folder"))  # fmt: skip
    if n_profiles < 4:
        problems.append(Problem(f"n_profiles must be >= 4, got {n_profiles}", code="SK610"))
    for r in ratios:
        if not 0 < r < 100 or int(r / 100 * n_profiles) == 0:
            problems.append(Problem(f"forget ratio {r} leaves an empty forget or retain split",
                                    code="SK610",
                                    hint="use ratios in 1..99 with enough profiles"))  # fmt: skip
    if not 1 <= train_variants <= T.MAX_TRAIN_VARIANTS:
        problems.append(Problem(f"train_variants must be in 1..{T.MAX_TRAIN_VARIANTS}, "
                                f"got {train_variants}", code="SK610"))  # fmt: skip
    if problems:
        raise DataError("cannot generate the world", problems)


def generate_world(out_dir: str | os.PathLike[str], seed: int = 0, n_profiles: int = 100, *,
                   n_celebrities: int = 20, forget_ratios: tuple[int, ...] = (5, 10, 15),
                   train_variants: int = 2, n_test_images: int = 3, n_val_images: int = 2,
                   object_drawings: int = 8, nested: bool = False,
                   overwrite: bool = False) -> WorldInfo:
    """Write a synthetic MLLMU-Bench world to ``out_dir`` and describe it.

    Args:
        out_dir: destination folder (replaced atomically when ``overwrite``).
        seed: the only source of randomness; same seed -> byte-identical files.
        n_profiles: fictitious people (IDs ``001``...), the Full_Set rows.
        n_celebrities: utility people (IDs ``C001``...), the Retain_Set rows.
        forget_ratios: percentages N; writes ``forget_N`` and ``retain_(100-N)``.
        train_variants: wordings per question trained in ft_Data (1..4; variant 0 = Full_Set).
        n_test_images: transformed portraits per Test_Set row (``images`` list).
        n_val_images: transformed portraits per Val_Set row.
        object_drawings: pictogram drawings per refusal object in ft_Extra.
        nested: make forget_5 within forget_10 within forget_15 instead of independent draws.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    ratios = tuple(int(r) for r in forget_ratios)
    _check_args(out, overwrite, n_profiles, ratios, train_variants)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        info = _build(tmp, seed, n_profiles, n_celebrities, ratios, train_variants,
                      n_test_images, n_val_images, object_drawings, nested)  # fmt: skip
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return WorldInfo(root=out, seconds=time.perf_counter() - t0, **info)


def _build(root: Path, seed: int, n: int, n_celeb: int, ratios: tuple[int, ...], variants: int,
           n_test: int, n_val: int, drawings: int, nested: bool) -> dict[str, Any]:
    width = max(3, len(str(n)))
    ids = [f"{i:0{width}d}" for i in range(1, n + 1)]
    cids = [f"C{i:03d}" for i in range(1, n_celeb + 1)]
    everyone = sample_people(_rng(seed, "people"), ids + cids)
    people, celebs = everyone[:n], everyone[n:]
    by_id = {p.id: p for p in everyone}
    portraits = {p.id: png_bytes(draw_portrait(p.code)) for p in everyone}
    forget = _split_ids(ids, ratios, _rng(seed, "split"), nested)
    rows: dict[str, int] = {}

    def put(name: str, data: list[dict[str, Any]], schema: Any, shards: int = 1) -> None:
        pio.write_config(root, name, data, schema, shards)
        rows[name] = len(data)

    full = [_eval_row(p, portraits[p.id], "full") for p in people]
    put("Full_Set", [{**r, "Directory": f"data_original/{r['ID']}.png"} for r in full],
        pio.FULL_SET)  # fmt: skip
    for r in ratios:
        keep = set(forget[r])
        put(f"forget_{r}", [x for x in full if x["ID"] in keep], pio.SPLIT)
        put(f"retain_{100 - r}", [x for x in full if x["ID"] not in keep], pio.SPLIT)
    for name, wording, count, stream, tag in (("Test_Set", "test", n_test, "test", "pose{j}_gen1"),
                                              ("Val_Set", "val", n_val, "val", "val{j}")):
        rng = _rng(seed, stream)
        data = []
        for p in people:
            base = draw_portrait(p.code)
            pngs = [(png_bytes(transform(base, rng)), f"{p.id}_{tag.format(j=j + 1)}.png")
                    for j in range(count)]  # fmt: skip
            data.append(_transformed_row(p, pngs, wording))
        put(name, data, pio.TRANSFORMED, shards=2 if name == "Test_Set" else 1)
    put("Retain_Set", [_eval_row(p, portraits[p.id], "full") for p in celebs], pio.SPLIT)

    def ft_row(p: Profile, entries: list[dict[str, str]]) -> dict[str, Any]:
        return {"image": pio.image_struct(portraits[p.id], f"{p.id}.png"), "ID": p.id,
                "metadata": metadata_json(entries)}  # fmt: skip

    ft_data = [ft_row(p, train_entries(p, variants)) for p in people]
    ft_extra = [ft_row(p, train_entries(p, variants) + private_entries(p, variants))
                for p in celebs]  # fmt: skip
    ft_extra += [ft_row(p, private_entries(p, variants)) for p in people]
    ft_extra += extras.object_train_rows(_rng(seed, "objects"), drawings)
    put("ft_Data", ft_data, pio.FT)
    put("ft_Extra", ft_extra, pio.FT)
    put("Refusal_Set", extras.refusal_rows(people, portraits, _rng(seed, "refusal"), 2),
        pio.REFUSAL)  # fmt: skip
    contrast = extras.write_contrast(root, by_id, portraits, forget, _rng(seed, "contrast"), 2,
                                     variants)  # fmt: skip
    pairs = {name: sum(len(json.loads(r["metadata"])) for r in data)
             for name, data in (("ft_Data", ft_data), ("ft_Extra", ft_extra))}  # fmt: skip
    info = {"seed": seed, "n_profiles": n, "n_celebrities": n_celeb,
            "forget_ids": {r: tuple(v) for r, v in forget.items()}, "rows": rows,
            "train_pairs": pairs, "contrast": contrast}  # fmt: skip
    manifest = {"layout_version": LAYOUT_VERSION, "generator": "steerkit.bench.world",
                "params": {"train_variants": variants, "n_test_images": n_test,
                           "n_val_images": n_val, "object_drawings": drawings, "nested": nested},
                **{k: v for k, v in info.items() if k != "forget_ids"},
                "forget_ids": {str(r): list(v) for r, v in forget.items()}}  # fmt: skip
    (root / "world.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (root / "README.md").write_text(world_readme(manifest), encoding="utf-8")
    return info
