"""YAML loading that rejects duplicate keys and remembers where every key sits.

PyYAML silently keeps the last of two duplicate keys and forgets line numbers once it has built
Python objects. Recipes and adapters are edited by hand, so we compose the node tree ourselves:
duplicates become errors and every dotted key path maps to its (line, column), which turns pydantic's
``loc`` tuples into ``file:line:col`` in error messages.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

KeyPath = tuple  # tuple[str | int, ...]

# Hostile-input limits. Real recipes, adapters and configs are a few KB, a few hundred values and under
# ten levels deep; the caps only stop files that would otherwise hang or exhaust memory.
MAX_FILE_BYTES = 1024 * 1024  # bounded read: /dev/zero or a multi-GB file is refused, not read
MAX_DEPTH = 64  # nesting levels; PyYAML's composer is recursive, so unbounded depth is a RecursionError
MAX_VALUES = 20_000  # values after expanding aliases ("billion laughs": 9 aliases x 9 levels = 10**9)
# Tags a plain-data file may carry (explicit or implied); python/*, !!set, !!binary and custom tags are refused.
PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in
                       ("str", "int", "float", "bool", "null", "timestamp", "map", "seq"))


@dataclass
class LoadedYaml:
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    path: str | None = None
    # key paths whose value a --set override wrote or created -> the override text (for error locations)
    overrides: dict[KeyPath, str] = field(default_factory=dict)

    def locate(self, loc: KeyPath) -> tuple[int | None, int | None]:
        """Best position for a key path: the deepest known prefix (pydantic locs can be deeper)."""
        loc = tuple(loc)
        while loc:
            if loc in self.positions:
                return self.positions[loc]
            loc = loc[:-1]
        return self.positions.get((), (None, None))


class _Abort(Exception):
    """Stops reading a document at the first problem that makes the rest meaningless (bomb, cycle, depth)."""

    def __init__(self, problem: Problem):
        self.problem = problem


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose recursive composer gives up at ``MAX_DEPTH`` instead of overflowing the stack."""

    _depth = 0
    _file: str | None = None

    def _too_deep(self, mark) -> _Abort:
        return _Abort(Problem(f"the document is nested more than {MAX_DEPTH} levels deep", self._file,
                              line=mark.line + 1, column=mark.column + 1, hint="flatten the structure",
                              code="SK103"))

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._too_deep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass):
        # The scanner looks ahead to the closing bracket of every open '[' / '{' (it may be a key), which is
        # quadratic in the depth: 20k nested brackets take seconds before the composer ever sees them.
        if self.flow_level >= MAX_DEPTH:
            raise self._too_deep(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


# YAML 1.2 booleans only. PyYAML follows YAML 1.1, where yes/no/on/off are booleans too, so
# `--set model.trust_remote_code=on` read as True (issue #18). Here they stay strings: strict fields
# (security switches) refuse them, and lax bool fields still accept them, as pydantic reads "on" as True.
_BOOL_WORDS = {"true": True, "false": False}
_DepthLimitedLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_DepthLimitedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _yaml12_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return _BOOL_WORDS[loader.construct_scalar(node).lower()]  # KeyError (`!!bool yes`) -> SK101


_DepthLimitedLoader.add_constructor("tag:yaml.org,2002:bool", _yaml12_bool)


class YamlProblems(Exception):
    """Raised with every problem found while reading a YAML document."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _at(node: yaml.Node, path: KeyPath) -> dict[str, Any]:
    """Problem location fields for a node at a key path."""
    line, column = _where(node)
    return {"line": line, "column": column, "key_path": ".".join(map(str, path)) or None}


def _scalar(node: yaml.Node, loader: yaml.SafeLoader, path: KeyPath, file: str | None) -> Any:
    """Construct one scalar; PyYAML's own constructors raise plain ValueError/KeyError on bad tagged values
    (``!!int abc``, ``!!bool maybe``, a 5000-digit int), which become a located problem here."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        shown = node.value if len(str(node.value)) <= 40 else str(node.value)[:37] + "..."
        raise _Abort(Problem(f"cannot read {shown!r} as {node.tag.rsplit(':', 1)[-1]} ({type(exc).__name__})",
                             file, **_at(node, path), hint="quote the value or remove the explicit tag",
                             code="SK101")) from None


def _build(node: yaml.Node, loader: yaml.SafeLoader, path: KeyPath, out: LoadedYaml,
           problems: list[Problem], file: str | None, state: dict | None = None) -> Any:
    # state: values built so far (aliases re-expand a shared node, so this is the expanded size) and the
    # collection nodes on the current branch (an alias to one of them is a cycle).
    state = {"count": 0, "active": set()} if state is None else state
    state["count"] += 1
    if state["count"] > MAX_VALUES:
        raise _Abort(Problem(f"the document expands to more than {MAX_VALUES} values (YAML aliases "
                             "repeating aliases?)", file, **_at(node, path),
                             hint="write the values out instead of nesting aliases", code="SK103"))
    out.positions[path] = _where(node)
    if node.tag not in PLAIN_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise _Abort(Problem(f"YAML tag '{tag}' is not allowed: steerkit files are plain data",
                             file, **_at(node, path), hint="remove the tag (write a plain value)", code="SK101"))
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in state["active"]:
            raise _Abort(Problem("a YAML alias refers to a collection that contains it (a cycle)", file,
                                 **_at(node, path), hint="remove the recursive alias", code="SK103"))
        state["active"].add(id(node))
        try:
            return _build_collection(node, loader, path, out, problems, file, state)
        finally:
            state["active"].discard(id(node))
    return _scalar(node, loader, path, file)


def _build_collection(node: yaml.Node, loader: yaml.SafeLoader, path: KeyPath, out: LoadedYaml,
                      problems: list[Problem], file: str | None, state: dict) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem("YAML merge keys ('<<') are not supported in steerkit files",
                                        file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        ".".join(map(str, path)) or None, "write the keys out", "SK101"))
                continue
            if key_node.tag not in PLAIN_TAGS:
                tag = key_node.tag.replace("tag:yaml.org,2002:", "!!")
                problems.append(Problem(f"YAML tag '{tag}' is not allowed: steerkit files are plain data", file,
                                        **_at(key_node, path), hint="remove the tag (write a plain value)",
                                        code="SK101"))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "mapping" if isinstance(key_node, yaml.MappingNode) else "list"
                problems.append(Problem(f"mapping key must be a plain scalar, got a {kind}", file,
                                        **_at(key_node, path), hint="use a plain word as the key", code="SK101"))
                continue
            key = _scalar(key_node, loader, path, file)
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
            result[key] = _build(value_node, loader, path + (key,), out, problems, file, state)
            out.positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    return [_build(v, loader, path + (i,), out, problems, file, state) for i, v in enumerate(node.value)]


def parse_yaml(text: str, file: str | None = None) -> LoadedYaml:
    """Parse one YAML document; raise YamlProblems for syntax errors and duplicate keys."""
    out = LoadedYaml(data=None, path=file)
    problems: list[Problem] = []
    loader = None
    try:
        loader = _DepthLimitedLoader(text)  # the reader rejects NUL and other control characters here
        loader._file = file
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
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        problems.append(Problem(f"the file contains a character YAML does not allow ({char})", file, line,
                                None, None,
                                "remove control characters such as NUL", "SK100"))
    except yaml.YAMLError as exc:
        problems.append(Problem(f"YAML error: {exc}", file, None, None, None, None, "SK100"))
    except _Abort as exc:
        problems.append(exc.problem)
    except RecursionError:  # defence in depth: MAX_DEPTH should stop this first
        problems.append(Problem("the document is nested too deeply", file, None, None, None,
                                "flatten the structure", "SK103"))
    finally:
        if loader is not None:
            loader.dispose()
    if problems:
        raise YamlProblems(problems)
    return out


def read_yaml(path: str | Path) -> LoadedYaml:
    """Read a YAML file as UTF-8; unreadable or non-UTF-8 files become problems, not tracebacks."""
    path = Path(path)
    name = str(path)
    try:  # bounded, non-blocking read: a FIFO, /dev/zero or a huge file cannot hang or fill memory
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NONBLOCK", 0))) as f:
            raw = f.read(MAX_FILE_BYTES + 1) or b""  # None: a FIFO whose writer has sent nothing yet
    except FileNotFoundError:
        raise YamlProblems([Problem("file not found", name, None, None, None,
                                    "check the path (relative paths resolve against the current folder)",
                                    "SK001")]) from None
    except IsADirectoryError:
        raise YamlProblems([Problem("expected a YAML file, got a directory", name, code="SK001")]) from None
    except OSError as exc:
        raise YamlProblems([Problem(f"cannot read file: {exc.strerror or exc}", name, code="SK001")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise YamlProblems([Problem(f"file is larger than {MAX_FILE_BYTES // 1024} KiB; steerkit YAML files are "
                                    "small text files", name, None, None, None,
                                    "check the path: this does not look like a recipe", "SK001")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblems([Problem(f"file is not valid UTF-8 (byte {exc.start})", name, line, None, None,
                                    "save the file as UTF-8", "SK100")]) from None
    return parse_yaml(text, name)


class _Dumper(yaml.SafeDumper):
    """Double-quote strings YAML would otherwise mangle (NEL U+0085 is read back as a line break)."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = '"' if "\x85" in value or "\u2028" in value or "\u2029" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
