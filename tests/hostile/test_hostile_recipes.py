"""``steerkit validate`` on a corpus of malformed recipes and bad ``--set`` overrides (issue #6).

Every file in ``recipes/`` is one small mistake made to the valid ``00_valid_base.yaml`` (an embedded
LLaVA recipe: 4 decoder layers). ``golden.yaml`` lists what the report must say for each: the file and
line, the key path and a message fragment. Every run must exit 2 (invalid input), print no traceback and
finish quickly: YAML bombs, 10**30-layer ranges and 20000-deep nesting included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from steerkit.cli.main import cli

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "recipes"
BASE = RECIPES / "00_valid_base.yaml"
GOLDEN = yaml.safe_load((HERE / "golden.yaml").read_text(encoding="utf-8"))
FILES: dict[str, dict] = GOLDEN["files"]
OVERRIDES: list[dict] = GOLDEN["overrides"]
SECONDS = 2.0  # per validate run, once imports are warm; the billion-laughs file must meet it too
HANG = 20  # hard stop (SIGALRM) so a regression fails instead of hanging the suite


@contextlib.contextmanager
def deadline(seconds: int):
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def boom(*_):
        raise TimeoutError(f"no answer within {seconds}s (hang?)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", autouse=True)
def warm() -> None:
    """Pay the one-time imports (pydantic models, adapters) before anything is timed."""
    CliRunner().invoke(cli, ["validate", str(BASE)])


def validate(*args: str) -> tuple[Result, float]:
    start = time.perf_counter()
    with deadline(HANG):
        result = CliRunner().invoke(cli, ["validate", *args])
    return result, time.perf_counter() - start


def crashed(r: Result) -> bool:
    return r.exception is not None and not isinstance(r.exception, SystemExit)


def check(r: Result, exit_code: int, expect: list[str], what: str) -> None:
    out = r.output
    assert not crashed(r), f"{what}: crashed with {r.exception!r}\n{out}"
    assert "Traceback" not in out, f"{what}: traceback\n{out}"
    assert r.exit_code == exit_code, f"{what}: exit {r.exit_code}, expected {exit_code}\n{out}"
    missing = [s for s in expect if s not in out]
    assert not missing, f"{what}: missing {missing} in\n{out}"


def corpus_files() -> list[str]:
    return sorted(p.name for p in RECIPES.iterdir() if p.is_file())


def test_corpus_and_golden_match() -> None:
    files = corpus_files()
    assert sorted(FILES) == files, (f"no golden entry: {sorted(set(files) - set(FILES))}; "
                                    f"golden entry without a file: {sorted(set(FILES) - set(files))}")
    assert len([f for f in files if FILES[f].get("exit", 2) == 2]) >= 50
    for name, entry in FILES.items():
        if entry.get("exit", 2) == 2 and not entry.get("pending", {}).get("exit"):
            assert any(name in s for s in entry["expect"]) or entry.get("pending") or \
                entry.get("names_other_file"), \
                f"{name}: expectations must name the file (and line)"


@pytest.mark.parametrize("name", sorted(FILES))
def test_validate_reports_the_problem(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = FILES[name]
    monkeypatch.chdir(tmp_path)  # a !!python/object/apply:os.system tag would run 'touch hostile-pwned' here
    r, seconds = validate(str(RECIPES / name))
    assert not list(tmp_path.iterdir()), f"{name}: validate wrote files: {list(tmp_path.iterdir())}"
    assert seconds < SECONDS, f"{name}: took {seconds:.2f}s"
    if entry.get("pending", {}).get("exit") is not None:
        return  # known wrong today (see pending.reason); only "no hang" is checked until the fix lands
    check(r, entry.get("exit", 2), entry["expect"], name)


def _pending_params() -> list:
    params = []
    for name, entry in sorted(FILES.items()):
        if entry.get("pending"):
            params.append(pytest.param(("file", name), id=name, marks=pytest.mark.xfail(
                strict=True, reason=entry["pending"]["reason"])))
    for i, entry in enumerate(OVERRIDES):
        if entry.get("pending"):
            params.append(pytest.param(("set", i), id=f"set:{entry['set'][0][:40]}", marks=pytest.mark.xfail(
                strict=True, reason=entry["pending"]["reason"])))
    return params


@pytest.mark.parametrize("case", _pending_params() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no pending expectations: every fix they waited for has landed"))])
def test_pending_golden(case: tuple[str, object]) -> None:
    """What the report should say once the fixes named in golden.yaml `pending_reasons` land."""
    kind, key = case
    entry = FILES[key] if kind == "file" else OVERRIDES[key]
    args = [str(RECIPES / key)] if kind == "file" else [str(BASE)] + [a for s in entry["set"] for a in ("--set", s)]
    r, _ = validate(*args)
    pending = entry["pending"]
    check(r, pending.get("exit", entry.get("exit", 2)), entry["expect"] + pending["expect"], str(key))


@pytest.mark.parametrize("entry", OVERRIDES, ids=[e["set"][0][:40] for e in OVERRIDES])
def test_bad_set_overrides(entry: dict) -> None:
    args = [str(BASE)] + [a for s in entry["set"] for a in ("--set", s)]
    r, seconds = validate(*args)
    assert seconds < SECONDS
    if entry.get("pending", {}).get("exit") is not None:
        return
    check(r, entry.get("exit", 2), entry["expect"], " ".join(entry["set"]))


# ------------------------------------------------------------------------------------- not corpus files
def test_many_files_at_once_report_each() -> None:
    names = ["type_name_int.yaml", "00_valid_base.yaml", "bomb_billion_laughs.yaml", "enc_binary.yaml"]
    r, _ = validate(*[str(RECIPES / n) for n in names])
    check(r, 2, ["type_name_int.yaml:2:1", "ok  ", "bomb_billion_laughs.yaml:27:", "enc_binary.yaml:1"], "many")


def test_missing_file_and_directory() -> None:
    r, _ = validate(str(RECIPES / "no-such-recipe.yaml"))
    check(r, 2, ["no-such-recipe.yaml", "file not found"], "missing file")
    r, _ = validate(str(RECIPES))
    assert r.exit_code == 2 and "directory" in r.output and not crashed(r), r.output


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)  # 2 MB of comments
    r, seconds = validate(str(big))
    check(r, 2, ["big.yaml", "larger than 1024 KiB"], "big file")
    assert seconds < SECONDS


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_device_is_refused() -> None:
    r, seconds = validate("/dev/zero")  # read_bytes() would never return (and eat all memory)
    check(r, 2, ["/dev/zero", "larger than 1024 KiB"], "/dev/zero")
    assert seconds < SECONDS


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_without_writer_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    r, seconds = validate(str(fifo))  # a blocking open() would wait for a writer forever
    check(r, 2, ["recipe.yaml"], "fifo")
    assert seconds < SECONDS


# ------------------------------------------------------------------------------------- library level
def test_parse_yaml_limits_directly() -> None:
    from steerkit.yamlio import YamlProblems, parse_yaml

    laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 12))  # 10**12 values
    start = time.perf_counter()
    with pytest.raises(YamlProblems, match="expands to more than"):
        parse_yaml(laughs, "laughs.yaml")
    assert time.perf_counter() - start < SECONDS
    ok = parse_yaml("base: &b {x: 1}\nother: [*b, *b]\n", "ok.yaml")  # ordinary aliases still work
    assert ok.data == {"base": {"x": 1}, "other": [{"x": 1}, {"x": 1}]}
    with pytest.raises(YamlProblems, match="nested more than"):
        parse_yaml("a: " + "{b: " * 5000 + "1" + "}" * 5000, "deep.yaml")


def test_check_paths_finds_missing_and_wrong_kind_data() -> None:
    from steerkit.recipe import check_paths, load_recipe

    assert check_paths(load_recipe(BASE)) == []
    problems = check_paths(load_recipe(RECIPES / "path_missing_jsonl.yaml"))
    assert [(p.key_path, p.line, p.code) for p in problems] == [("direction.erasure.source.path", 12, "SK230")]
    assert problems[0].path.endswith("path_missing_jsonl.yaml") and "no-such-file.jsonl" in problems[0].message
    problems = check_paths(load_recipe(RECIPES / "path_mllmu_is_file.yaml"))
    assert [p.key_path for p in problems] == ["gate.forget.0.path"] and "must be a folder" in problems[0].message
    problems = check_paths(load_recipe(BASE, ["direction.recall.source.path=gone.jsonl"]))
    assert [(p.path, p.key_path) for p in problems] == [("--set", "direction.recall.source.path")]


def test_locate_fills_in_compile_problems() -> None:
    from steerkit.errors import Problem
    from steerkit.recipe import load_recipe

    loaded = load_recipe(RECIPES / "layers_stop_past_end.yaml")
    (p,) = loaded.locate([Problem("layers [4] are outside", key_path="steer.layers", code="SK301")])
    assert (Path(p.path).name, p.line, p.column) == ("layers_stop_past_end.yaml", 21, 3)
    loaded = load_recipe(BASE, ["steer.layers=[0, 9]"])
    (p,) = loaded.locate([Problem("layers [9] are outside", key_path="steer.layers", code="SK301")])
    assert (p.path, p.line) == ("--set", None)
