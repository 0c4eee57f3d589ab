"""Reading files that other people hand us (prompt lists, images, contrast sets) without trusting them.

``open()`` on a FIFO waits for a writer forever and ``read()`` on ``/dev/zero`` never ends, so every
user-named input is opened non-blocking, must be a regular file, and is read only up to a size cap
(issue #18). Text must also be real Unicode: JSON can spell a lone surrogate (``"\\ud800"``) that
Python accepts but tokenizers and UTF-8 writers crash on. Callers turn the reasons into ``Problem``s.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

MAX_INPUT_BYTES = 256 * 1024 * 1024  # a prompt or contrast jsonl: far above any real one
MAX_LINE_BYTES = 1024 * 1024  # one jsonl line (a prompt past any model's context is ~100 KB)
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # an encoded image file; PIL's own pixel cap stops decompression bombs


class UnreadableFile(Exception):
    """Why a file cannot be read; ``missing`` separates "not found" from every other reason."""

    def __init__(self, reason: str, missing: bool = False):
        super().__init__(reason)
        self.reason, self.missing = reason, missing


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file no larger than ``max_bytes``, or ``UnreadableFile`` saying why not."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once, never waits
    except FileNotFoundError:
        raise UnreadableFile("not found", missing=True) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UnreadableFile(getattr(exc, "strerror", None) or str(exc)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(f"not a regular file ({file_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise UnreadableFile(f"file is {st.st_size:,} bytes; the limit is {max_bytes:,}")
        try:
            data = f.read(max_bytes + 1)  # + 1: a file that grew since fstat is still caught
        except OSError as exc:
            raise UnreadableFile(exc.strerror or str(exc)) from None
    if len(data) > max_bytes:
        raise UnreadableFile(f"file is larger than the limit of {max_bytes:,} bytes")
    return data


def bad_unicode(text: str) -> Optional[str]:
    """Why ``text`` is not valid Unicode (a lone surrogate from a JSON escape), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"holds a lone surrogate {text[exc.start]!r} at character {exc.start + 1} "
                "(JSON \\ud800-\\udfff escapes must come in pairs)")
    return None
