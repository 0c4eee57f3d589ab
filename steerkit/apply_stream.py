"""``steerkit apply``'s answering loop: batches in, JSON lines out as each batch finishes.

One bad prompt must not cost the others (issue #18): a prompt the tokenizer or model cannot take is
reported with its line number and skipped, and a batch that fails is retried one prompt at a time to
find the culprit. ``--out`` is checked before any model loads (writable, not the ``--input`` file) and
rewritten atomically after every batch, so it always holds whole lines, sorted by input line: what
finished survives a later failure or a Ctrl-C, and a crash never leaves half a line.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from .apply_inputs import ApplyRow
from .bounded_io import file_kind
from .bundle_source import path_text_problem
from .errors import DataError, Problem, SteerkitError, SteeringRuntimeError


def _out_error(out: str, message: str, hint: str, code: str = "SK748") -> DataError:
    return DataError(f"cannot write --out {out}", [Problem(message, out, None, None, "--out", hint, code)])


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def check_out_path(out: str, input_path: Optional[str]) -> Path:
    """Make sure answers can be written to ``out`` before the model loads, so no work is thrown away."""
    why = path_text_problem(out)
    if why:
        raise _out_error(out, f"the path {why}", "give a shorter, plain file path")
    path = Path(out)
    if input_path is not None and _same_file(path, Path(input_path)):
        raise _out_error(out, "--out is the --input file; writing answers there would destroy the prompts",
                         "write the answers to another file, e.g. answers.jsonl")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # the folder check below names the cause
        st = None
    except OSError as exc:
        raise _out_error(out, f"cannot look at it: {exc.strerror or exc}", "check the path") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _out_error(out, f"--out is {file_kind(st.st_mode)}, not a file", "name a file to write")
    try:  # the real test of writability: create (and remove) a temp file where the answers will go
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _out_error(out, f"cannot write in {path.parent}: {exc.strerror or exc}",
                         "choose a folder you can write to") from None
    return path


class ResultSink:
    """Where answers go as their batch finishes: ``--out`` (rewritten atomically, sorted by line) or stdout."""

    def __init__(self, out: Optional[Path], echo: Callable[[str], None]):
        self.out, self.echo = out, echo
        self.rows: list = []

    def add(self, records: list[dict]) -> None:
        if not records:
            return
        self.rows += records
        if self.out is None:
            for r in sorted(records, key=lambda r: r["line"]):
                self.echo(json.dumps(r, ensure_ascii=False))
            return
        from .evaluate.report import atomic_write_text

        self.rows.sort(key=lambda r: r["line"])
        atomic_write_text(self.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows))


def failed(row: ApplyRow, where: str, exc: BaseException) -> Problem:
    """A prompt the tokenizer or model raised on: named by its line, the rest of the run goes on."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return Problem(f"the model could not process this prompt ({type(exc).__name__}{': ' + text if text else ''})",
                   where, row.line, None, "prompt", "check the prompt's text and image; the other lines were "
                   "answered", "SK749")


def answer_all(rows: Sequence[ApplyRow], batch_size: int, answer: Callable[[list[ApplyRow]], list[dict]],
               check: Callable[[ApplyRow], Optional[Problem]], sink: ResultSink, where: str,
               report: Callable[[Problem], None], progress: Callable = lambda it: it) -> None:
    """Answer ``rows`` batch by batch into ``sink``; ``check`` screens each row first (context length).

    A batch that raises (anything but a SteerkitError, which is the run's own failure) is answered again
    row by row, and each row that still raises is reported. When nothing has been answered yet and
    every row fails, the failure is the run's, not the input's: it is raised."""
    order = sorted(rows, key=lambda r: r.image is None)  # image prompts batch together
    for s in progress(range(0, len(order), batch_size)):
        ok = []
        for r in order[s:s + batch_size]:
            try:
                problem = check(r)
            except SteerkitError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a tokenizer that cannot take this text
                problem = failed(r, where, exc)
            if problem:
                report(problem)
            else:
                ok.append(r)
        if not ok:
            continue
        try:
            sink.add(answer(ok))
            continue
        except SteerkitError:
            raise
        except Exception as batch_exc:  # noqa: BLE001 - find which prompt it was
            if len(ok) == 1 and sink.rows:
                report(failed(ok[0], where, batch_exc))
                continue
            first = batch_exc
        done = []
        for r in ok:
            try:
                done += answer([r])
            except SteerkitError:
                raise
            except Exception as exc:  # noqa: BLE001
                report(failed(r, where, exc))
        if not done and not sink.rows:  # nothing works at all: the model or plan is broken, not a line
            raise SteeringRuntimeError("apply stopped: the model failed on every prompt so far", [Problem(
                f"{type(first).__name__}: {str(first).strip()[:300]}", where, None, None, None,
                "run with --debug for the traceback; if one prompt is at fault, remove its line", "SK750")]) \
                from first
        sink.add(done)
