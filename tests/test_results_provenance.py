"""Result files cannot silently go stale.

Every ``benchmarks/results/*.json`` names the code it measures (MEASURES below). A file is fresh when
it records (under ``provenance.git_commit``, written by benchmarks/provenance.py) a commit that already
contains the last change to that code. Every file that is not fresh (older commit, or no provenance)
must be listed in the README's "Stale figures" section, and every listed file must really be stale:
the README says plainly which figures are stale, and the list cannot outlive a rerun.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

_PIPELINE = ["steerkit/extraction.py", "steerkit/gates.py", "steerkit/ops.py", "steerkit/compile.py",
             "steerkit/runtime_nnsight.py", "steerkit/runtime_hooks.py",
             "steerkit/runtime_common.py", "steerkit/positions.py", "steerkit/evaluate", "steerkit/models",
             "steerkit/bench", "recipes/unlearning"]
MEASURES = {
    "eraser.json": ["benchmarks/eraser.py", *_PIPELINE],
    "mllmeraser.json": ["benchmarks/mllmeraser.py", *_PIPELINE],
    "mllmeraser_ablations.json": ["benchmarks/mllmeraser.py", *_PIPELINE],
    "unlearning.json": ["benchmarks/unlearning.py", "steerkit/unlearn", "baselines", *_PIPELINE],
    "vanilla.json": ["benchmarks/vanilla.py", "steerkit/train", "steerkit/models", "steerkit/bench",
                     "steerkit/evaluate"],
    "overhead.json": ["benchmarks/overhead.py", "steerkit/runtime_nnsight.py", "steerkit/runtime_hooks.py",
                      "steerkit/runtime_common.py", "steerkit/ops.py", "steerkit/positions.py", "steerkit/plan.py",
                      "steerkit/testing/hook_reference.py"],
    "extract_memory.json": ["benchmarks/extract_memory.py", "steerkit/activation_store.py",
                            "steerkit/activations.py", "steerkit/extraction.py"],
    "gate_fit.json": ["benchmarks/gate_fit.py", "steerkit/gates.py"],
    "robustness.json": ["benchmarks/robustness.py", "steerkit/strength.py", "steerkit/answer_scores.py",
                        *_PIPELINE],
    "gate_probe.json": ["benchmarks/gate_probe.py", "steerkit/extraction.py", "steerkit/activations.py"],
    "gate_scores.json": ["benchmarks/gate_scores.py", "steerkit/extraction.py", "steerkit/ops.py",
                         "steerkit/activations.py"],
}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def is_fresh(name: str) -> tuple[bool, str]:
    """(fresh, why) for one result file."""
    data = json.loads((RESULTS / name).read_text())
    commit = (data.get("provenance") or {}).get("git_commit") if isinstance(data, dict) else None
    if not commit:
        return False, "records no git commit"
    last = _git("log", "-1", "--format=%H", "--", *MEASURES[name])
    if not last:
        return False, "the measured code has no history here"
    if subprocess.run(["git", "merge-base", "--is-ancestor", last, commit], cwd=ROOT,
                      capture_output=True).returncode != 0:
        return False, f"recorded commit {commit[:10]} predates {last[:10]}, the last change to the code it measures"
    return True, "fresh"


def readme_stale_list() -> set[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^#+ Stale figures\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert m, "README.md has no 'Stale figures' section"
    return set(re.findall(r"benchmarks/results/([\w.-]+\.json)", m.group(1)))


@pytest.fixture(scope="module")
def git_checkout():
    if _git("rev-parse", "--is-inside-work-tree") != "true" or _git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("not a full git checkout: result provenance cannot be compared with code history")


def test_every_result_file_names_what_it_measures():
    on_disk = {p.name for p in RESULTS.glob("*.json")}
    assert on_disk == set(MEASURES), "update MEASURES in tests/test_results_provenance.py"
    for paths in MEASURES.values():
        missing = [p for p in paths if not (ROOT / p).exists()]
        assert not missing, missing


def test_readme_lists_exactly_the_stale_result_files(git_checkout):
    listed = readme_stale_list()
    verdicts = {name: is_fresh(name) for name in sorted(MEASURES)}
    unlisted = {n: why for n, (fresh, why) in verdicts.items() if not fresh and n not in listed}
    assert not unlisted, f"stale results not listed in the README's 'Stale figures': {unlisted}"
    wrongly = sorted(n for n in listed if verdicts.get(n, (True, ""))[0])
    assert not wrongly, f"README lists fresh (or unknown) result files as stale: {wrongly}"


def test_a_stale_file_is_caught(git_checkout, tmp_path, monkeypatch):
    """The check itself: a result stamped with the repository's first commit is stale."""
    first = _git("rev-list", "--max-parents=0", "HEAD").splitlines()[0]
    head = _git("rev-parse", "HEAD")
    (tmp_path / "gate_fit.json").write_text(json.dumps({"provenance": {"git_commit": first}}))
    (tmp_path / "gate_scores.json").write_text(json.dumps({"provenance": {"git_commit": head}}))
    (tmp_path / "vanilla.json").write_text(json.dumps({"llava": {}}))
    monkeypatch.setitem(globals(), "RESULTS", tmp_path)
    assert is_fresh("gate_fit.json")[0] is False
    assert is_fresh("gate_scores.json") == (True, "fresh")
    assert is_fresh("vanilla.json") == (False, "records no git commit")
