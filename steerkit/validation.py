"""Turn pydantic validation errors into located, fixable ``Problem`` records.

Shared by recipes, adapters and baseline configs: every document is parsed by ``yamlio`` (which keeps
positions) and validated by a pydantic model whose sections all forbid unknown keys. This module maps
each pydantic error ``loc`` back to ``file:line:col`` and a dotted key path, and adds "did you mean"
hints for unknown keys and bad choices.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import Problem, SteerkitError, choices_hint, did_you_mean
from .yamlio import LoadedYaml


class StrictModel(BaseModel):
    """Base for every model read from disk: unknown keys are errors, instances are immutable."""

    # allow_inf_nan=False: YAML spells infinity and NaN as .inf/.nan (and 1.0e+400 overflows to inf); no
    # steerkit number means anything when it is not finite (a NaN strength would silently poison every output).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """All BaseModel classes reachable inside an annotation (Optional, Union, list, dict, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_model_classes(arg))
    return found


def allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the parent of ``loc`` (best effort; unions contribute all members)."""
    candidates: list[type[BaseModel]] = [root]
    for part in loc[:-1]:
        nxt: list[type[BaseModel]] = []
        for cls in candidates:
            field = cls.model_fields.get(part) if isinstance(part, str) else None
            if field is None and isinstance(part, str):
                field = next((f for f in cls.model_fields.values() if f.alias == part), None)
            if field is not None:
                nxt.extend(_model_classes(field.annotation))
        if nxt:
            candidates = nxt
        # list indices, dict keys and discriminator tags keep the current candidates
    names: set[str] = set()
    for cls in candidates:
        for name, field in cls.model_fields.items():
            names.add(field.alias or name)
    return sorted(names)


def _data_loc(loc: tuple, data: Any, missing: bool = False) -> tuple:
    """Drop the parts of a pydantic loc that are not in the data (union tags, function names); with
    ``missing``, keep the last part, the name of the absent key (a union tag there is not one)."""
    out: list = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif missing and last and isinstance(node, dict) and isinstance(part, str):
            out.append(part)  # a missing field, named where it should be
    return tuple(out)


# The fix: line of an SK204 (type or range) problem, by pydantic error type; the message says the range.
_TYPE_HINTS = {
    "bool_type": "write true or false, unquoted (quoted words, yes/on and 1 are not booleans here)",
    "bool_parsing": "write true or false, unquoted",
    "int_type": "write a whole number", "int_parsing": "write a whole number",
    "int_from_float": "write a whole number", "float_type": "write a number", "float_parsing": "write a number",
    "finite_number": "write a finite number (not .inf or .nan)", "string_type": "write a text value",
    "string_pattern_mismatch": "use only the characters the pattern allows",
    "greater_than": "use a larger value", "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value", "less_than_equal": "use a smaller value",
    "too_short": "add items", "too_long": "remove items", "list_type": "write a list: [a, b]",
    "dict_type": "write a mapping: {key: value}", "model_type": "write a mapping: {key: value}",
}
FIX_MARK = "; fix: "  # a validator's ValueError("what went wrong; fix: what to do") becomes message + hint
_DEFAULT_HINT = "fix the value (docs/reference/recipe.md lists each key's type and range)"

_SHAPE_ERRORS = frozenset({"list_type", "dict_type", "model_type", "model_attributes_type", "tuple_type"})


def _override_for(doc: LoadedYaml, loc: tuple) -> str | None:
    """The ``--set`` item that put the value at ``loc`` (or one of its parents) there, if any."""
    overrides = getattr(doc, "overrides", None) or {}
    for n in range(len(loc), 0, -1):
        if tuple(loc[:n]) in overrides:
            return overrides[tuple(loc[:n])]
    return None


def problems_from_validation(exc: ValidationError, doc: LoadedYaml, root: type[BaseModel],
                             code_prefix: str = "SK2") -> list[Problem]:
    problems = []
    errors = [(e, _data_loc(tuple(e.get("loc", ())), doc.data, missing=e.get("type") == "missing"))
              for e in exc.errors(include_url=False)]

    def wrong_member(err: Any, loc: tuple) -> bool:
        """A plain union (steer.layers: range or list) reports every member; when another member got
        further into the value, the "input should be a list/dict" of the member that did not is noise."""
        return err.get("type") in _SHAPE_ERRORS and len(err.get("loc", ())) > len(loc)

    for err, loc in errors:
        if wrong_member(err, loc) and any(o is not err and o_loc[:len(loc)] == loc and not wrong_member(o, o_loc)
                                          for o, o_loc in errors):
            continue
        raw_loc = tuple(err.get("loc", ()))
        etype = err.get("type", "")
        ctx = err.get("ctx", {}) or {}
        if etype in ("union_tag_invalid", "union_tag_not_found"):  # name the tag key itself, e.g. gate.rule
            loc = loc + (str(ctx.get("discriminator", "")).strip("'\""),)
        key_path = ".".join(str(p) for p in loc) or None
        line, col = doc.locate(loc)
        where = doc.path
        if _override_for(doc, loc) is not None:  # the value came from --set, not from a line of the file
            where, line, col = "--set", None, None
        hint = None
        code = f"{code_prefix}00"
        if etype == "extra_forbidden":
            key = str(raw_loc[-1]) if raw_loc else "?"
            allowed = allowed_keys(root, raw_loc)
            message = f"unknown key '{key}'"
            guess = did_you_mean(key, allowed)
            hint = f"{guess + ' ' if guess else ''}allowed keys here: {', '.join(allowed)}"
            code = f"{code_prefix}01"
        elif etype in ("missing", "union_tag_not_found"):
            message = "required key is missing"
            name = raw_loc[-1] if etype == "missing" and raw_loc else (loc[-1] if loc else None)
            hint = f"add '{name}'" if name is not None else None
            code = f"{code_prefix}02"
        elif etype in ("literal_error", "enum", "union_tag_invalid"):
            expected = ctx.get("expected") or ctx.get("expected_tags") or ""
            got = ctx["tag"] if etype == "union_tag_invalid" and "tag" in ctx else err.get("input")
            choices = [c.strip().strip("'\"") for c in str(expected).replace(" or ", ",").split(",") if c.strip()]
            message = f"unknown value {got!r}; expected one of: {', '.join(choices)}"
            hint = choices_hint(str(got), choices) if choices else None
            code = f"{code_prefix}03"
        else:
            got = err.get("input")
            msg = str(err.get("msg", "invalid value"))
            hint = _TYPE_HINTS.get(etype, _DEFAULT_HINT)
            if etype == "value_error" and msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]  # our own validators' messages read as sentences
                msg, _, own_hint = msg.partition(FIX_MARK)  # "what; fix: how" from a validator
                hint = own_hint or hint
            if isinstance(got, dict) and etype == "value_error":
                message = msg  # a whole section echoed back helps nobody; the key path says which
            else:
                shown = repr(got)
                if len(shown) > 60:
                    shown = shown[:57] + "..."
                message = f"{msg} (got {shown})"
            code = f"{code_prefix}04"
        problems.append(Problem(message, where, line, col, key_path, hint, code))
    return problems


def validate_document(model: type[BaseModel], doc: LoadedYaml, error_type: type[SteerkitError],
                      what: str, code_prefix: str = "SK2") -> Any:
    """Validate a parsed document, raising ``error_type`` with every problem at once."""
    if not isinstance(doc.data, dict):
        line, col = doc.locate(())
        raise error_type(f"{doc.path or what} is invalid", [Problem(
            f"expected a mapping at the top level, got {type(doc.data).__name__}", doc.path, line, col,
            None, f"a {what} starts with 'schema_version: 1'", f"{code_prefix}00")])
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, doc, model, code_prefix)
        raise error_type(f"{doc.path or what} is invalid", problems) from None
