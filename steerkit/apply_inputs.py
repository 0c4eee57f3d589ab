"""Reading ``apply`` inputs line by line: every bad line is reported with its number, good lines go on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from .errors import Problem


@dataclass
class ApplyRow:
    line: int
    prompt: str
    image_path: Optional[str]
    image: Optional[Image.Image]


def open_image(path: Path, where: str, line: Optional[int]) -> tuple[Optional[Image.Image], Optional[Problem]]:
    try:
        with Image.open(path) as im:
            return im.convert("RGB"), None
    except FileNotFoundError:
        return None, Problem(f"image not found: {path}", where, line, None, "image",
                             "fix the path (relative paths resolve against the jsonl file's folder)", "SK741")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: a tiny file that claims billions of pixels (PIL refuses to decode it)
        return None, Problem(f"image cannot be read ({type(exc).__name__}): {path}", where, line, None, "image",
                             "replace it with a PNG or JPEG file", "SK742")


def read_apply_jsonl(path: Path) -> tuple[list[ApplyRow], list[Problem]]:
    rows: list[ApplyRow] = []
    problems: list[Problem] = []
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [Problem(f"cannot read input: {exc.strerror}", where, None, None, None,
                            "check the --input path", "SK740")]
    for n, bline in enumerate(raw.split(b"\n"), start=1):
        if not bline.strip():
            continue
        try:  # utf-8-sig on line 1: files saved by Windows editors start with a byte-order mark
            obj = json.loads(bline.decode("utf-8-sig" if n == 1 else "utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # [[[[...]]]] recurses
            problems.append(Problem(f"not a JSON object: {exc}", where, n, None, None,
                                    'each line must look like {"prompt": "...", "image": "face.png"}', "SK743"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(f"expected a JSON object, got {type(obj).__name__}", where, n, None, None,
                                    None, "SK743"))
            continue
        unknown = set(obj) - {"prompt", "image", "id", "target"}
        prompt = obj.get("prompt")
        if unknown:
            problems.append(Problem(f"unknown keys {sorted(unknown)}", where, n, None, None,
                                    "allowed keys: prompt, image, id, target", "SK744"))
            continue
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(Problem("'prompt' is missing or empty", where, n, None, "prompt",
                                    "give a non-empty prompt string", "SK745"))
            continue
        image_path, image = obj.get("image"), None
        if image_path is not None:
            if not isinstance(image_path, str):
                problems.append(Problem("'image' must be a path string or null", where, n, None, "image", None,
                                        "SK741"))
                continue
            full = Path(image_path) if Path(image_path).is_absolute() else path.parent / image_path
            image, problem = open_image(full, where, n)
            if problem:
                problems.append(problem)
                continue
        rows.append(ApplyRow(n, prompt, image_path, image))
    return rows, problems
