"""Error types shared by every steerkit module.

Every user-facing failure is a ``SteerkitError`` holding one or more ``Problem`` records, so that
validation can report *all* problems at once and the CLI can render them without a traceback.
A problem answers three questions: where (file:line:col and a dotted key path), what (got vs
expected) and how to fix it (a hint).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, with its location and a suggested fix."""

    message: str
    path: str | None = None  # file the problem is in
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    key_path: str | None = None  # dotted path inside the document, e.g. "steer.layers.start"
    hint: str | None = None
    code: str = "SK000"

    def location(self) -> str:
        parts = []
        if self.path:
            parts.append(str(self.path))
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def render(self) -> str:
        head = self.location()
        key = f"  {self.key_path}" if self.key_path else ""
        lines = [f"  {head}{key}  [{self.code}]".rstrip()]
        lines.append(f"        {self.message}")
        if self.hint:
            lines.append(f"        fix: {self.hint}")
        return "\n".join(lines)


class SteerkitError(Exception):
    """Base of every error steerkit raises on purpose (bad input, impossible plan, bad bundle)."""

    kind = "input"
    exit_code = 2  # invalid input; runtime failures override with 1

    def __init__(self, summary: str, problems: Sequence[Problem] | None = None):
        self.summary = summary
        self.problems: list[Problem] = list(problems or [])
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        if n == 0:
            return f"Error: {self.summary}"
        head = f"Error: {self.summary} ({n} problem{'s' if n != 1 else ''})"
        return head + "\n\n" + "\n\n".join(p.render() for p in self.problems)


class RecipeError(SteerkitError):
    """A recipe (or a --set override) is invalid."""


class AdapterError(SteerkitError):
    """An adapter file is invalid, missing, or does not fit the model."""


class BundleError(SteerkitError):
    """A bundle file is corrupt, lies about itself, or does not fit the model."""


class CompileError(SteerkitError):
    """A recipe is valid on its own but cannot be compiled into a feasible plan."""


class DataError(SteerkitError):
    """An input data file (jsonl, parquet, image) is missing or malformed."""


class SteeringRuntimeError(SteerkitError):
    """A plan failed while running on a model (not the user's input's fault)."""

    kind = "runtime"
    exit_code = 1


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """Return a "did you mean 'x'?" phrase for the closest valid choice, or None."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def choices_hint(name: str, choices: Iterable[str]) -> str:
    """A hint listing the valid choices, led by a "did you mean" when one is close."""
    choices = sorted(choices)
    guess = did_you_mean(name, choices)
    listed = ", ".join(choices)
    return f"{guess + ' ' if guess else ''}valid choices: {listed}"


@dataclass
class ProblemCollector:
    """Collects problems while validating, then raises them all at once."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    def raise_if_any(self, error_type: type[SteerkitError], summary: str) -> None:
        if self.problems:
            raise error_type(summary, self.problems)
