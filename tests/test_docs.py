"""The documentation cannot drift from the code.

1. Generated pages (recipe / CLI / adapter / error references, JSON Schemas, the results block) equal
   what ``scripts/gen_docs.py`` produces now, byte for byte.
2. Every page's examples run. Each page is executed top to bottom in its own temporary folder, like
   a reader following it:
   - fenced ```python blocks run (one namespace per page); ```python {.no-run} blocks are shown only;
     ```python {.slow} blocks run only in the slow tier (``-m slow``);
   - in ```console blocks, ``$ steerkit ...`` lines run through click's CliRunner and the lines
     printed under them must appear in the output, in order (whitespace-insensitive, ``...`` matches
     anything); ``# exit N`` after a command expects that exit code (default 0);
   - in ```bash blocks, ``steerkit ...`` lines run the same way (output not compared);
   - only commands that need no model run: validate, compile, schema, adapters list|show,
     recipes list|cp, inspect. Every other ``steerkit`` line (extract, apply, eval, demo, adapters
     check) is parsed against the real click command, so a renamed flag still fails here;
   - a block tagged {.no-run} is never executed or parsed.
3. Every page names the source files it documents (front matter ``sources:``) and they exist.
4. ``mkdocs build --strict`` passes (about 10 s here; see ``test_mkdocs_build_strict``).
"""

from __future__ import annotations

import glob
import importlib.util
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"^(validate|compile|schema|adapters (list|show)|recipes (list|cp)|inspect)\b")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    classes: set[str] = field(default_factory=set)
    body: str = ""


def parse_blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a markdown page, with their language and {.class} tags."""
    blocks, current, closing, indent = [], None, "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if current is None:
            m = FENCE.match(line)
            if m:
                info = m["info"].strip()
                lang = re.split(r"[\s{]", info, maxsplit=1)[0] if info else ""
                classes = set(re.findall(r"\.([\w-]+)", info[len(lang):]))
                current = Block(str(path.relative_to(DOCS)), n, lang, classes)
                closing, indent = m["fence"], len(m["indent"])
        elif line.strip() == closing:
            blocks.append(current)
            current = None
        else:
            current.body += line[indent:] + "\n"
    return blocks


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "overrides" not in p.parts and p.parent.name != "results")


def _load_gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------- 1. generated
def test_generated_pages_are_up_to_date():
    # In a fresh interpreter: other tests in the same worker import and configure the CLI (env vars,
    # click state), and the page must match what `python scripts/gen_docs.py` writes on a clean start.
    import subprocess
    import sys

    root = DOCS.parent
    proc = subprocess.run([sys.executable, str(root / "scripts/gen_docs.py"), "--check"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, ("generated docs are out of date; run: python scripts/gen_docs.py\n"
                                  f"{proc.stdout}{proc.stderr}")
    gen = _load_gen_docs()
    files = gen.build_all()
    assert "docs/reference/recipe.md" in files and "docs/reference/cli.md" in files
    assert gen.build_all() == files, "scripts/gen_docs.py is not deterministic"


def test_cli_reference_covers_every_command():
    import click

    from steerkit.cli.main import cli

    text = (DOCS / "reference" / "cli.md").read_text()
    ctx = click.Context(cli, info_name="steerkit")
    for name in cli.list_commands(ctx):
        assert f"## steerkit {name} " in text, f"`steerkit {name}` is missing from docs/reference/cli.md"


def test_results_page_embeds_benchmark_files(tmp_path, monkeypatch):
    """With benchmark output present, tables are inlined (headings demoted, links re-rooted), figures
    embedded, and only the still-missing figures stay listed as pending."""
    gen = _load_gen_docs()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results" / "overhead.md").write_text("# Overhead\n\n![plot](overhead.png)\n")
    (tmp_path / "benchmarks" / "results" / "overhead.png").write_bytes(b"\x89PNG")
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    files = gen.results_files((DOCS / "results.md").read_text())
    page = files["docs/results.md"].decode()
    assert files["docs/results/overhead.png"] == b"\x89PNG"
    assert "\n### Overhead\n" in page and "![plot](results/overhead.png)" in page
    assert "(`*overhead*`)" not in page and "(`*unlearning*`)" in page
    assert "No benchmark results yet" not in page


# ----------------------------------------------------------------------------------------- 2. examples
def _expect_lines(expected: list[str], output: str, where: str) -> None:
    lines = output.splitlines()
    i = 0
    for want in expected:
        if not want.strip():
            continue
        pattern = re.compile(r"\s+".join(".*".join(map(re.escape, part.split("..."))) for part in want.split()))
        while i < len(lines) and not pattern.search(lines[i]):
            i += 1
        assert i < len(lines), f"{where}: expected output line not found (in order):\n  {want}\n--- got:\n{output}"
        i += 1


def _split_command(line: str) -> tuple[list[str], int, str | None]:
    """argv after `steerkit`, the expected exit code, and a `> file` redirect target."""
    exit_code = 0
    m = re.search(r"#\s*exit\s+(\d+)\s*$", line)
    if m:
        exit_code = int(m.group(1))
    tokens = shlex.split(line, comments=True)
    if "|" in tokens:
        tokens = tokens[: tokens.index("|")]
    redirect = None
    if ">" in tokens:
        k = tokens.index(">")
        redirect, tokens = tokens[k + 1], tokens[:k]
    argv = []
    for t in tokens[1:]:
        argv += sorted(glob.glob(t)) or [t] if any(c in t for c in "*?[") else [t]
    return argv, exit_code, redirect


def _parse_only(argv: list[str], where: str) -> None:
    """Resolve the command chain and parse its options without running it (no model is loaded)."""
    import click

    from steerkit.cli.main import cli

    def rest(ctx: click.Context) -> list[str]:  # a group keeps the subcommand name apart (click 8.2+)
        return [*getattr(ctx, "_protected_args", []), *ctx.args]

    cmd = cli
    ctx = cli.make_context("steerkit", list(argv))
    args = rest(ctx)
    while isinstance(cmd, click.Group) and args:
        name, sub, args = cmd.resolve_command(ctx, args)
        assert sub is not None, f"{where}: no command `{name}`"
        cmd, ctx = sub, sub.make_context(name, list(args), parent=ctx)
        args = rest(ctx)
    assert not isinstance(cmd, click.Group), f"{where}: `steerkit {' '.join(argv)}` names no command"


def _run_command(line: str, where: str) -> None:
    from steerkit.cli.main import cli

    argv, expected_exit, redirect = _split_command(line)
    result = CliRunner().invoke(cli, argv, prog_name="steerkit", catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{where}: `{line}` raised") from result.exception
    assert result.exit_code == expected_exit, (
        f"{where}: `{line}` exited {result.exit_code}, the docs expect {expected_exit}\n{result.output}")
    if redirect:
        Path(redirect).write_text(result.stdout)
    return result.output


def _commands(block: Block):
    """(line number, command text, expected output lines) for each steerkit command in a shell block."""
    out, current = [], None
    for k, raw in enumerate(block.body.splitlines(), start=block.line + 1):
        line = raw.strip()
        if block.lang == "console":
            if line.startswith("$ "):
                current = [k, line[2:].strip(), []]
                out.append(current)
            elif current is not None:
                current[2].append(raw)
        elif line and not line.startswith("#"):
            out.append([k, line, []])
    return [(k, cmd, exp) for k, cmd, exp in out if cmd.startswith("steerkit ")]


def run_page(path: Path, *, slow: bool) -> int:
    """Execute a page's examples in the current folder; return how many ran."""
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for block in parse_blocks(path):
        if "no-run" in block.classes:
            continue
        where = f"docs/{block.page}:{block.line}"
        if block.lang == "python":
            if "slow" in block.classes and not slow:
                continue
            exec(compile(block.body, where, "exec"), namespace)  # noqa: S102 - our own docs
            ran += 1
        elif block.lang in ("console", "bash", "sh", "shell"):
            for k, cmd, expected in _commands(block):
                where_line = f"docs/{block.page}:{k}"
                argv = _split_command(cmd)[0]
                if RUNNABLE.match(" ".join(argv)):
                    _expect_lines(expected, _run_command(cmd, where_line), where_line)
                else:
                    _parse_only(argv, where_line)
                ran += 1
    return ran


PAGES = pages()
SLOW_PAGES = [p for p in PAGES if any(b.lang == "python" and "slow" in b.classes for b in parse_blocks(p))]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page(page, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES, ids=[str(p.relative_to(DOCS)) for p in SLOW_PAGES])
def test_page_examples_run_slow(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page(page, slow=True)


def test_docs_have_runnable_examples():
    """Guards the harness itself: if parsing broke, every page would 'pass' by running nothing."""
    blocks = [b for p in PAGES for b in parse_blocks(p)]
    python = [b for b in blocks if b.lang == "python" and not b.classes & {"no-run", "slow"}]
    shell = [c for b in blocks if b.lang in ("console", "bash") and "no-run" not in b.classes
             for c in _commands(b)]
    assert len(python) >= 10 and len(shell) >= 10, (len(python), len(shell))


def test_harness_catches_a_wrong_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match="expected output line not found"):
        _expect_lines(["no-such-adapter   vision-language"], _run_command("steerkit adapters list", "x"), "x")
    import click

    with pytest.raises(click.NoSuchOption):
        _parse_only(["apply", "my.yaml", "--no-such-flag"], "x")
    blocks = parse_blocks(DOCS / "getting-started.md")
    assert any(b.lang == "python" and not b.classes for b in blocks)
    assert any(b.lang == "bash" and "no-run" in b.classes for b in blocks)


# ----------------------------------------------------------------------------------------- 3. sources
def _front_matter(path: Path) -> dict:
    import yaml

    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text[4:text.index("\n---", 4)]) or {}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_names_existing_sources(page):
    sources = _front_matter(page).get("sources")
    assert sources, f"{page.relative_to(ROOT)} has no `sources:` front matter naming the files it documents"
    for source in sources:
        pattern = str(source).split(" ")[0]
        assert glob.glob(str(ROOT / pattern), recursive=True), f"{page.relative_to(ROOT)}: no file matches {pattern}"


# ----------------------------------------------------------------------------------------- 4. mkdocs
def test_mkdocs_build_strict(tmp_path):
    """Nav complete, no broken links or anchors, mkdocstrings resolves every API object (~10 s)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
