"""Reading ``apply`` inputs line by line: every bad line is reported with its number, good lines go on."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from .bounded_io import MAX_IMAGE_BYTES, MAX_INPUT_BYTES, MAX_LINE_BYTES, UnreadableFile, bad_unicode, read_bounded
from .errors import DataError, Problem


@dataclass
class ApplyRow:
    line: int
    prompt: str
    image_path: Optional[str]
    image: Optional[Image.Image]


def open_image(path: Path, where: str, line: Optional[int]) -> tuple[Optional[Image.Image], Optional[Problem]]:
    try:  # bounded, non-blocking read first: a FIFO named face.png must not hang the run (#18)
        data = read_bounded(path, MAX_IMAGE_BYTES)
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB"), None
    except UnreadableFile as exc:
        if exc.missing:
            return None, Problem(f"image not found: {path}", where, line, None, "image",
                                 "fix the path (relative paths resolve against the jsonl file's folder)", "SK741")
        return None, Problem(f"image cannot be read ({exc.reason}): {path}", where, line, None, "image",
                             "point at a PNG or JPEG file", "SK742")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: a tiny file that claims billions of pixels (PIL refuses to decode it)
        return None, Problem(f"image cannot be read ({type(exc).__name__}): {path}", where, line, None, "image",
                             "replace it with a PNG or JPEG file", "SK742")


def prompt_problem(prompt: object, where: str, line: Optional[int]) -> Optional[Problem]:
    """Why a prompt cannot be answered before it reaches the tokenizer (empty, or not valid Unicode)."""
    if not isinstance(prompt, str) or not prompt.strip():
        return Problem("'prompt' is missing or empty", where, line, None, "prompt", "give a non-empty prompt string",
                       "SK745")
    why = bad_unicode(prompt)
    if why:  # the tokenizer raises on these, and json.dumps(ensure_ascii=False) cannot write them
        return Problem(f"the prompt {why}", where, line, None, "prompt",
                       "write the character itself, or a valid surrogate pair", "SK747")
    return None


def read_input_file(path: Path) -> bytes:
    """The --input file's bytes; a missing, special (FIFO, /dev/zero) or huge file is one DataError."""
    try:
        return read_bounded(path, MAX_INPUT_BYTES)
    except UnreadableFile as exc:
        raise DataError(f"cannot read --input {path}", [Problem(
            f"cannot read input: {exc.reason}", str(path), None, None, None,
            "check the --input path" if exc.missing else "pass a regular jsonl file (one JSON object per line)",
            "SK740")]) from None


def read_apply_jsonl(path: Path) -> tuple[list[ApplyRow], list[Problem]]:
    rows: list[ApplyRow] = []
    problems: list[Problem] = []
    where = str(path)
    raw = read_input_file(path)
    for n, bline in enumerate(raw.split(b"\n"), start=1):
        if not bline.strip():
            continue
        if len(bline) > MAX_LINE_BYTES:  # json.loads would build it all; no prompt is this long
            problems.append(Problem(f"line is {len(bline):,} bytes; the limit is {MAX_LINE_BYTES:,}", where, n,
                                    None, None, "split or shorten the line", "SK743"))
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
            problems.append(Problem(f"unknown keys {[k[:40] for k in sorted(unknown)[:10]]}", where, n, None, None,
                                    "allowed keys: prompt, image, id, target", "SK744"))
            continue
        problem = prompt_problem(prompt, where, n)
        if problem:
            problems.append(problem)
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
        rows.append(ApplyRow(n, prompt, image_path, image))  # type: ignore[arg-type]  # prompt checked above
    return rows, problems
