"""Arrow schemas of the MLLMU-Bench configs and a deterministic parquet writer.

Why explicit schemas: the reference eval indexes the task columns as nested structs and lists, so
they must be real parquet structs (never JSON strings), while ``biography`` and ``metadata`` must be
JSON strings; an explicit schema also keeps empty lists and nulls typed. Writing goes through one
function with fixed options, so the same rows always produce the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
OPTIONS = pa.struct([(k, pa.string()) for k in ("A", "B", "C", "D")])
MC_ITEM = pa.struct(
    [("Correct_Answer", pa.string()), ("Options", OPTIONS), ("Question", pa.string())]
)
CLASSIFICATION = pa.struct(
    [("Image_Textual_Questions", pa.list_(MC_ITEM)), ("Pure_Text_Questions", pa.list_(MC_ITEM))]
)
OPEN_ITEM = pa.struct(
    [("Ground_Truth", pa.string()), ("Question", pa.string()), ("Type", pa.string())]
)
_TASKS = [
    ("Classification_Task", CLASSIFICATION),
    ("Generation_Task", pa.list_(OPEN_ITEM)),
    ("Mask_Task", pa.list_(OPEN_ITEM)),
]
_PROFILE = [("biography", pa.string()), ("question", pa.string()), ("answer", pa.string())]

#: Full_Set: the original portrait plus its ``Directory`` (the card shows it only for Full_Set).
FULL_SET = pa.schema(
    [("image", IMAGE), ("ID", pa.string()), ("Directory", pa.string())] + _PROFILE + _TASKS
)
#: forget_N / retain_M / Retain_Set: as Full_Set without ``Directory`` (as on the dataset card).
SPLIT = pa.schema([("image", IMAGE), ("ID", pa.string())] + _PROFILE + _TASKS)
#: Test_Set / Val_Set: a list of transformed portraits replaces ``image``.
TRANSFORMED = pa.schema([("images", pa.list_(IMAGE)), ("ID", pa.string())] + _PROFILE + _TASKS)
#: ft_Data / ft_Extra: one image and a JSON list of {Question, Answer, Type}.
FT = pa.schema([("image", IMAGE), ("ID", pa.string()), ("metadata", pa.string())])
#: Refusal_Set (steerkit extra): one fully formatted request per row; ``image`` null for QA.
REFUSAL = pa.schema(
    [
        ("image", IMAGE),
        ("ID", pa.string()),
        ("Prompt", pa.string()),
        ("Ground_Truth", pa.string()),
        ("Type", pa.string()),
        ("Category", pa.string()),
        ("Should_Refuse", pa.bool_()),
    ]
)


def image_struct(png: bytes, path: str) -> dict[str, Any]:
    """The ``{bytes, path}`` struct HF ``datasets`` uses for an Image feature."""
    return {"bytes": png, "path": path}


def write_config(root: Path, name: str, rows: list[dict[str, Any]], schema: pa.Schema,
                 shards: int = 1) -> None:
    """Write ``rows`` as ``root/name/train-0000k-of-0000n.parquet`` (HF ``datasets`` naming)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    shards = max(1, min(shards, len(rows))) if rows else 1
    per = -(-len(rows) // shards) if rows else 0
    for k in range(shards):
        part = rows[k * per : (k + 1) * per]
        table = pa.Table.from_pylist(part, schema=schema)
        pq.write_table(
            table,
            folder / f"train-{k:05d}-of-{shards:05d}.parquet",
            compression="snappy",
            write_statistics=False,
            store_schema=True,
        )
