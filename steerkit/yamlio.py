"""YAML loading that rejects duplicate keys and remembers where every key sits.

PyYAML silently keeps the last of two duplicate keys and forgets line numbers once it has built
Python objects. Recipes and adapters are edited by hand, so we compose the node tree ourselves:
duplicates become errors and every dotted key path maps to its (line, column), which turns pydantic's
``loc`` tuples into ``file:line:col`` in error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

KeyPath = tuple  # tuple[str | int, ...]


@dataclass
class LoadedYaml:
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    path: str | None = None

    def locate(self, loc: KeyPath) -> tuple[int | None, int | None]:
        """Best position for a key path: the deepest known prefix (pydantic locs can be deeper)."""
        loc = tuple(loc)
        while loc:
            if loc in self.positions:
                return self.positions[loc]
            loc = loc[:-1]
        return self.positions.get((), (None, None))


class YamlProblems(Exception):
    """Raised with every problem found while reading a YAML document."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def _build(node: yaml.Node, loader: yaml.SafeLoader, path: KeyPath, out: LoadedYaml,
           problems: list[Problem], file: str | None) -> Any:
    out.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem("YAML merge keys ('<<') are not supported in steerkit files",
                                        file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        ".".join(map(str, path)) or None, "write the keys out", "SK101"))
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                problems.append(Problem(f"mapping key must be a plain scalar, got {type(key).__name__}",
                                        file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        ".".join(map(str, path)) or None, None, "SK101"))
                continue
            key = str(key)
            if key in result:
                first = out.positions.get(path + (key,), (None, None))
                problems.append(Problem(
                    f"duplicate key '{key}' (first defined at line {first[0]})", file,
                    key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                    ".".join(map(str, path + (key,))), "keep one of the two definitions", "SK102"))
                continue
            result[key] = _build(value_node, loader, path + (key,), out, problems, file)
            out.positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, loader, path + (i,), out, problems, file) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, file: str | None = None) -> LoadedYaml:
    """Parse one YAML document; raise YamlProblems for syntax errors and duplicate keys."""
    out = LoadedYaml(data=None, path=file)
    loader = yaml.SafeLoader(text)
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append(Problem("the file is empty; expected a YAML mapping", file, 1, 1, None,
                                    "start from a shipped example: steerkit recipes cp NAME DEST", "SK100"))
        else:
            out.data = _build(node, loader, (), out, problems, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        problems.append(Problem(f"YAML syntax error: {exc.problem or exc}", file, line, col, None,
                                "check indentation and quoting near this line", "SK100"))
    except yaml.YAMLError as exc:
        problems.append(Problem(f"YAML error: {exc}", file, None, None, None, None, "SK100"))
    finally:
        loader.dispose()
    if problems:
        raise YamlProblems(problems)
    return out


def read_yaml(path: str | Path) -> LoadedYaml:
    """Read a YAML file as UTF-8; unreadable or non-UTF-8 files become problems, not tracebacks."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise YamlProblems([Problem("file not found", name, None, None, None,
                                    "check the path (relative paths resolve against the current folder)",
                                    "SK001")]) from None
    except IsADirectoryError:
        raise YamlProblems([Problem("expected a YAML file, got a directory", name, code="SK001")]) from None
    except OSError as exc:
        raise YamlProblems([Problem(f"cannot read file: {exc.strerror}", name, code="SK001")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblems([Problem(f"file is not valid UTF-8 (byte {exc.start})", name, line, None, None,
                                    "save the file as UTF-8", "SK100")]) from None
    return parse_yaml(text, name)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
