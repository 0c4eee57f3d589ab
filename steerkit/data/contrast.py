"""Read contrast-set jsonl files into ``ContrastItem`` records.

Format, one JSON object per line (blank lines are skipped)::

    {"image": "images/x.png" | null, "prompt": "...", "target": "..." | null, "id": "..."}

``prompt`` is required (the user text, already formatted); ``image`` is a path relative to the
jsonl file (absolute paths are used as they are); ``target`` is the continuation to teacher-force
(PGD target or answer); ``id`` is optional. Why strict: a contrast set silently missing half its
lines gives a wrong direction with no error, so every bad line is reported, by line number, in one
``DataError``, and every missing image is named.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from steerkit.bounded_io import (MAX_IMAGE_BYTES, MAX_INPUT_BYTES, MAX_LINE_BYTES, UnreadableFile, bad_unicode,
                                 read_bounded)
from steerkit.data.items import ContrastItem
from steerkit.errors import DataError, Problem, ProblemCollector, did_you_mean

__all__ = ["read_contrast_jsonl", "CONTRAST_KEYS"]

CONTRAST_KEYS = ("image", "prompt", "target", "id")


def _line_problems(obj: Any, path: str, n: int) -> list[Problem]:
    if not isinstance(obj, dict):
        return [Problem(f"expected a JSON object, got {type(obj).__name__}", path=path, line=n,
                        code="SK611")]  # fmt: skip
    out = []
    for key in obj:
        if key not in CONTRAST_KEYS:
            guess = did_you_mean(key, CONTRAST_KEYS)
            out.append(Problem(f"unknown key {key!r}", path=path, line=n, key_path=str(key),
                               code="SK612", hint=(guess + " " if guess else "")
                               + "valid keys: " + ", ".join(CONTRAST_KEYS)))  # fmt: skip
    if not isinstance(obj.get("prompt"), str) or not obj.get("prompt"):
        out.append(Problem("'prompt' must be a non-empty string", path=path, line=n,
                           key_path="prompt", code="SK612"))  # fmt: skip
    for key in ("image", "target", "id"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            out.append(Problem(f"'{key}' must be a string or null, got {type(obj[key]).__name__}",
                               path=path, line=n, key_path=key, code="SK612"))  # fmt: skip
    for key in ("prompt", "target"):  # tokenizers raise on a lone surrogate ("\ud800" in JSON)
        why = bad_unicode(obj[key]) if isinstance(obj.get(key), str) else None
        if why:
            out.append(Problem(f"'{key}' {why}", path=path, line=n, key_path=key, code="SK612"))
    return out


def read_contrast_jsonl(path: str | os.PathLike[str]) -> list[ContrastItem]:
    """Parse ``path``; images are loaded as RGB and resolved relative to the file.

    Raises:
        DataError: the file is missing or empty, or any line is malformed or names a missing or
            unreadable image (all problems are listed at once).
    """
    file = Path(path)
    try:  # bounded and non-blocking: a FIFO or /dev/zero named as a contrast file must not hang (#18)
        data = read_bounded(file, MAX_INPUT_BYTES)
    except UnreadableFile as exc:
        raise DataError("contrast file not found" if exc.missing else f"cannot read contrast file {file}",
                        [Problem("no such file" if exc.missing else exc.reason, path=str(file),
                                 code="SK601")]) from None
    problems = ProblemCollector()
    items: list[ContrastItem] = []
    images: dict[Path, Image.Image] = {}
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            problems.add(Problem(f"line is {len(raw):,} bytes; the limit is {MAX_LINE_BYTES:,}", path=str(file),
                                 line=n, code="SK611"))
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, RecursionError) as exc:
            problems.add(Problem(f"invalid JSON: {type(exc).__name__}", path=str(file), line=n, code="SK611",
                                 hint="save the file as UTF-8, one flat JSON object per line"))
            continue
        except json.JSONDecodeError as exc:
            problems.add(Problem(f"invalid JSON: {exc.msg}", path=str(file), line=n,
                                 column=exc.colno, code="SK611"))  # fmt: skip
            continue
        found = _line_problems(obj, str(file), n)
        if found:
            for p in found:
                problems.add(p)
            continue
        image = None
        if obj.get("image"):
            img_path = (file.parent / obj["image"]).resolve()
            if img_path not in images:
                try:
                    with Image.open(io.BytesIO(read_bounded(img_path, MAX_IMAGE_BYTES))) as im:
                        images[img_path] = im.convert("RGB")
                except UnreadableFile as exc:
                    problems.add(Problem(f"image not found: {img_path}" if exc.missing else
                                         f"image cannot be read ({exc.reason}): {img_path}", path=str(file),
                                         line=n, key_path="image", code="SK613",
                                         hint="image paths are relative to the jsonl file"))
                    continue
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    problems.add(Problem(f"image does not decode: {img_path}: {exc}",
                                         path=str(file), line=n, key_path="image", code="SK613"))
                    continue
            image = images[img_path]
        items.append(ContrastItem(prompt=obj["prompt"], image=image, target=obj.get("target"),
                                  id=obj.get("id") or "", source=f"{file.name}:{n}"))
    problems.raise_if_any(DataError, f"malformed contrast file {file}")
    if not items:
        raise DataError("empty contrast file",
                        [Problem("the file holds no items", path=str(file), code="SK611")])
    return items
