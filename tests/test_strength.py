"""Strength calibration in the recipe (steer.strength.search): schema, proxy, rule, bundle, CLI.

The end-to-end tests run on a tiny saved LLaVA next to a 20-profile world, with a direction from
different prompts (no PGD) so extraction takes seconds.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from steerkit.bundle import Bundle
from steerkit.cli.main import cli
from steerkit.errors import RecipeError
from steerkit.recipe import parse_recipe_text
from steerkit.strength import choose
from steerkit.testing.fixtures import tiny_workdir

HEAD = """schema_version: 1
name: tiny-strength
model: {id: model}
direction:
  method: mean_diff
  recall: {source: {kind: mllmu, path: world, split: forget, tasks: [classification], limit: 8}}
  erasure: {source: {kind: jsonl, path: world/contrast/erasure.jsonl, limit: 8}}
gate:
  rule: ridge_linear
  forget: [{kind: mllmu, path: world, split: forget, tasks: [classification]}]
  retain: [{kind: mllmu, path: world, split: retain, tasks: [classification], limit: 60}]
  holdout: 0.25
bundle: {path: out/bundle.safetensors}
"""
SEARCH = """steer:
  layers: {start: 0}
  strength:
    search:
      grid: [-0.001, -3.0, -300.0]
      max_retain_drop: 0.05
      forget:
        - {kind: mllmu, path: world, split: val_forget, tasks: [classification]}
        - {kind: jsonl, path: world/contrast/forget_10_answer.jsonl, limit: 6}
      retain: [{kind: mllmu, path: world, split: val_retain, tasks: [classification], limit: 24}]
      batch_size: 16
"""
FIXED = "steer: {layers: {start: 0}, strength: {lambda: -2.0}}\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tiny_workdir(tmp_path_factory.mktemp("strength"))
    (root / "search.yaml").write_text(HEAD + SEARCH)
    (root / "fixed.yaml").write_text(HEAD.replace("out/bundle", "out/fixed") + FIXED)
    r = CliRunner().invoke(cli, ["extract", str(root / "search.yaml")])
    assert r.exit_code == 0, r.output
    return root


# ----------------------------------------------------------------------------------------- schema
def _recipe(strength_yaml: str):
    return parse_recipe_text(HEAD + "steer:\n  layers: {start: 0}\n  strength: " + strength_yaml + "\n")


def test_schema_needs_a_lambda_or_a_search():
    with pytest.raises(RecipeError) as exc:
        _recipe("{}")
    assert "steer.strength.search" in exc.value.render()
    with pytest.raises(RecipeError) as exc:
        _recipe("{search: {grid: [], forget: [{kind: jsonl, path: a.jsonl}], retain: [{kind: jsonl, path: "
                "b.jsonl}]}}")
    assert "grid" in exc.value.render()
    with pytest.raises(RecipeError) as exc:
        _recipe("{search: {forget: [{kind: jsonl, path: a.jsonl}]}}")
    assert "retain" in exc.value.render()
    spec = _recipe("{search: {forget: [{kind: jsonl, path: a.jsonl}], retain: [{kind: jsonl, path: b.jsonl}]}}")
    assert spec.recipe.steer.strength.lambda_ is None and spec.recipe.steer.strength.search.max_retain_drop == 3.0


def test_validate_checks_the_calibration_data_paths(workdir):
    r = CliRunner().invoke(cli, ["validate", str(workdir / "search.yaml"), "--set",
                                 "steer.strength.search.retain=[{kind: jsonl, path: nowhere.jsonl}]",
                                 "--set", "bundle.path=out/not_yet.safetensors"])
    assert r.exit_code == 2 and "steer.strength.search.retain.0.path" in r.output and "SK230" in r.output, r.output
    assert "nowhere.jsonl" in r.output


# ----------------------------------------------------------------------------------------- the rule
def _row(lam, forget, retain, f_top=None, r_top=None):
    return {"lambda": lam, "forget": {"answer_prob": forget, "top1_accuracy": f_top},
            "retain": {"answer_prob": retain, "top1_accuracy": r_top}}


def test_rule_forgets_most_within_the_retain_budget():
    vanilla = _row(None, 90.0, 80.0)
    rows = [_row(-1, 60.0, 79.0), _row(-2, 30.0, 77.5), _row(-4, 10.0, 70.0)]
    best, within = choose(vanilla, rows, "answer_prob", 3.0, None)
    assert best["lambda"] == -2 and within
    assert [r["within_budget"] for r in rows] == [True, True, False]
    assert rows[2]["retain_drop"] == 10.0


def test_rule_with_a_forget_target_takes_the_weakest_strength_reaching_it():
    vanilla = _row(None, 90.0, 80.0)
    rows = [_row(-1, 40.0, 80.0), _row(-2, 24.0, 79.0), _row(-4, 5.0, 78.0)]
    assert choose(vanilla, rows, "answer_prob", 3.0, 25.0)[0]["lambda"] == -2
    assert choose(vanilla, rows, "answer_prob", 3.0, 1.0)[0]["lambda"] == -4  # unreachable: forget most


def test_rule_when_nothing_fits_takes_the_least_harm_and_says_so():
    vanilla = _row(None, 90.0, 80.0)
    rows = [_row(-1, 40.0, 70.0), _row(-2, 20.0, 60.0)]
    best, within = choose(vanilla, rows, "answer_prob", 3.0, None)
    assert best["lambda"] == -1 and not within


def test_accuracy_ties_are_broken_by_the_continuous_proxy():
    """The failure the proxy exists for: equal accuracy at two strengths, the weaker chosen by the tie."""
    vanilla = _row(None, 90.0, 80.0, 100.0, 95.0)
    rows = [_row(-1, 45.0, 79.0, 40.0, 95.0), _row(-2, 20.0, 79.0, 40.0, 95.0)]
    assert choose(vanilla, rows, "top1_accuracy", 3.0, None)[0]["lambda"] == -2
    assert choose(vanilla, rows, "answer_prob", 3.0, None)[0]["lambda"] == -2


# ----------------------------------------------------------------------------------------- the proxy
@pytest.fixture(scope="module")
def session(workdir):
    from steerkit.recipe import load_recipe
    from steerkit.session import load_session

    loaded = load_recipe(workdir / "search.yaml")
    return load_session(loaded.recipe.model, loaded.base_dir)


def test_free_form_proxy_is_the_teacher_forced_likelihood(session):
    from steerkit.answer_scores import Question, score_questions

    q = Question("Where was the person born?", None, "In a small town by the sea.")
    (p, top1), = score_questions(session, None, [q])
    enc = session.encode([q.prompt], [None], answers=[q.answer])
    with torch.no_grad():
        loss = session.model(**enc.inputs, labels=enc.labels).loss  # HF's mean NLL over the answer tokens
    assert top1 is None and p == pytest.approx(float(torch.exp(-loss)), rel=1e-4)


def test_choice_proxy_sums_every_token_the_scorer_reads_as_the_letter(session):
    from steerkit.answer_scores import Question, letter_tokens, score_questions
    from steerkit.evaluate.metrics import first_letter

    q = Question("Which one? A. x B. y C. z D. w", None, "C", {"A": "x", "B": "y", "C": "z", "D": "w"})
    (p, top1), = score_questions(session, None, [q])
    enc = session.encode([q.prompt], [None])
    with torch.no_grad():
        probs = torch.softmax(session.model(**enc.inputs).logits[0, -1].float(), -1)
    ids = letter_tokens(session.tokenizer, probs.shape[-1])["C"]
    assert ids.numel() > 0 and all(first_letter(session.tokenizer.decode([int(i)])) == "C" for i in ids[:50])
    assert p == pytest.approx(float(probs[ids].sum()), rel=1e-4)
    assert top1 == float(first_letter(session.tokenizer.decode([int(probs.argmax())])) == "C")


def test_prompt_mask_keeps_steering_and_gate_on_the_prompt(session, workdir):
    """Teacher forcing appends the answer; with prompt_mask the prompt is steered exactly as without it,
    so the first answer token's distribution is the one a prefill-steered generation starts from."""
    from steerkit.pipeline import plan_for
    from steerkit.recipe import load_recipe
    from steerkit.runtime_nnsight import steer

    loaded = load_recipe(workdir / "search.yaml", ["steer.strength.lambda=-5"])
    plan = plan_for(loaded, session, Bundle.load(workdir / "out/bundle.safetensors"))
    prompt, answer = "Where was the person born?", "In a town."
    alone = session.encode([prompt], [None])
    both = session.encode([prompt], [None], answers=[answer])
    t = alone.inputs["input_ids"].shape[1]
    mask = both.inputs["attention_mask"].bool() & ~both.answer_mask
    with steer(session.model, plan, session.image_token_id) as st:
        ref, g_ref = st.forward(alone.inputs, return_gates=True)
        masked, g_masked = st.forward(both.inputs, return_gates=True, prompt_mask=mask)
        unmasked, g_unmasked = st.forward(both.inputs, return_gates=True)
    assert torch.allclose(masked[:, :t], ref, atol=1e-5)
    assert all(torch.allclose(g_masked[k], g_ref[k]) for k in g_ref)
    # without the mask the gate reads the last answer token instead: the check above can fail
    assert not all(torch.allclose(g_unmasked[k], g_ref[k]) for k in g_ref)


# ----------------------------------------------------------------------------------------- bundle and CLI
def test_extract_stores_the_choice_and_the_whole_table(workdir):
    b = Bundle.load(workdir / "out/bundle.safetensors")
    s = b.manifest.strength
    assert [r["lambda"] for r in s["grid"]] == [-0.001, -3.0, -300.0]
    assert s["n_forget"] == 20 + 6 and s["n_forget_choice"] == 20 and s["n_retain"] == 24
    chosen = next(r for r in s["grid"] if r["lambda"] == s["lambda"])
    assert chosen["within_budget"] == s["within_budget"]
    if s["within_budget"]:  # the rule, checked on the stored table
        fits = [r for r in s["grid"] if r["within_budget"]]
        best = min(r["forget"]["answer_prob"] for r in fits)
        near = [r for r in fits if r["forget"]["answer_prob"] <= best + s["plateau"] + 1e-9]
        assert chosen is min(near, key=lambda r: abs(r["lambda"]))  # the weakest on the plateau
        assert all(r["retain_drop"] <= 0.05 + 1e-9 for r in fits)
    assert {"strength_forget_0", "strength_forget_1", "strength_retain_0"} <= set(b.manifest.data)
    assert s["vanilla"]["forget"]["answer_prob"] > 0


def test_apply_and_eval_steer_with_the_calibrated_lambda(workdir, session):
    from steerkit.pipeline import get_bundle, plan_for
    from steerkit.recipe import load_recipe

    calibrated = Bundle.load(workdir / "out/bundle.safetensors").manifest.strength["lambda"]
    logs: list[str] = []
    loaded = load_recipe(workdir / "search.yaml")
    plan = plan_for(loaded, session, get_bundle(loaded, session, log=logs.append))
    assert {w.strength for w in plan.writes} == {calibrated}
    assert any("calibrated lambda" in m for m in logs)
    logs.clear()
    loaded = load_recipe(workdir / "search.yaml", ["steer.strength.lambda=-7.5"])
    plan = plan_for(loaded, session, get_bundle(loaded, session, log=logs.append))
    assert {w.strength for w in plan.writes} == {-7.5}
    assert any("steer.strength.lambda=-7.5 overrides the calibrated lambda" in m for m in logs), logs


def test_apply_cli_says_when_the_override_wins(workdir):
    r = CliRunner().invoke(cli, ["apply", str(workdir / "search.yaml"), "--prompt", "Where was the person born?",
                                 "--max-new-tokens", "2", "--set", "steer.strength.lambda=-1"])
    assert r.exit_code == 0, r.output
    assert "steer.strength.lambda=-1 overrides the calibrated lambda" in r.output


def test_compile_shows_the_calibrated_lambda_and_the_pending_one(workdir, tmp_path):
    runner = CliRunner()
    calibrated = Bundle.load(workdir / "out/bundle.safetensors").manifest.strength["lambda"]
    r = runner.invoke(cli, ["compile", str(workdir / "search.yaml"), "--format", "json"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert {w["strength"] for w in plan["writes"]} == {calibrated}
    r = runner.invoke(cli, ["compile", str(workdir / "search.yaml"), "--set", f"bundle.path={tmp_path}/none.st"])
    assert r.exit_code == 0 and "calibrated at extract" in r.output, r.output


def test_a_bundle_without_calibration_is_refused_by_a_searching_recipe(workdir):
    runner = CliRunner()
    assert runner.invoke(cli, ["extract", str(workdir / "fixed.yaml")]).exit_code == 0
    assert Bundle.load(workdir / "out/fixed.safetensors").manifest.strength is None
    r = runner.invoke(cli, ["compile", str(workdir / "search.yaml"), "--bundle", str(workdir / "out/fixed.safetensors")])
    assert r.exit_code == 2 and "SK322" in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(cli, ["compile", str(workdir / "search.yaml"), "--bundle", str(workdir / "out/fixed.safetensors"),
                            "--set", "steer.strength.lambda=-1"])
    assert r.exit_code == 0, r.output


def test_inspect_shows_the_search_table(workdir):
    r = CliRunner().invoke(cli, ["inspect", str(workdir / "out/bundle.safetensors")])
    assert r.exit_code == 0, r.output
    s = Bundle.load(workdir / "out/bundle.safetensors").manifest.strength
    assert f"strength: lambda {s['lambda']:g}" in r.output and "<- chosen" in r.output
    assert sum(line.strip().startswith(("-0.001", "-3 ", "-300")) for line in r.output.splitlines()) == 3


def test_calibration_rows_need_an_answer(workdir):
    rows = [json.loads(line) for line in (workdir / "world/contrast/forget_10_answer.jsonl").read_text().splitlines()]
    (workdir / "world/contrast/no_target.jsonl").write_text("".join(json.dumps({**r, "target": None}) + "\n" for r in rows[:3]))
    r = CliRunner().invoke(cli, ["extract", str(workdir / "search.yaml"), "-o", str(workdir / "out/x.safetensors"),
                                 "--set", "steer.strength.search.forget=[{kind: jsonl, path: world/contrast/no_target.jsonl}]"])
    assert r.exit_code == 2 and "SK650" in r.output and "Traceback" not in r.output, r.output
    assert "gate forget" not in r.output  # found before any fit, not after hours of extraction
    assert not (workdir / "out/x.safetensors").exists()


def test_a_hand_edited_strength_table_is_named_not_rendered(workdir, tmp_path):
    from pydantic import ValidationError

    from steerkit.bundle import BundleManifest

    b = Bundle.load(workdir / "out/bundle.safetensors")
    odd = b.manifest.model_dump()
    odd["strength"] = {"lambda": -1.0, "grid": "junk"}
    Bundle(b.tensors, BundleManifest.model_validate(odd)).save(tmp_path / "odd.safetensors")
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "odd.safetensors")])
    assert r.exit_code == 0 and "search table is unreadable" in r.output and "Traceback" not in r.output, r.output
    odd["strength"] = {"grid": []}  # no lambda: refused at load, like any invalid manifest
    with pytest.raises(ValidationError) as exc:
        BundleManifest.model_validate(odd)
    assert "strength.lambda" in str(exc.value)


def test_plateau_chooses_the_weakest_strength_near_the_best_forget_score():
    """Past the plateau a stronger push buys hundredths of a point: the weakest strength within it wins."""
    vanilla = _row(None, 93.7, 92.2, 97.0, 95.0)
    rows = [_row(-1, 59.0, 92.2, 46.0, 95.0), _row(-2, 56.6, 92.2, 45.0, 95.0), _row(-6, 55.7, 92.0, 44.0, 95.0)]
    assert choose(vanilla, rows, "answer_prob", 3.0, None)[0]["lambda"] == -6  # no plateau: the lowest score
    assert choose(vanilla, rows, "answer_prob", 3.0, None, plateau=2.0)[0]["lambda"] == -2
    assert choose(vanilla, rows, "answer_prob", 3.0, None, plateau=5.0)[0]["lambda"] == -1
