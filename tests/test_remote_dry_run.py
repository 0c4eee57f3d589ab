"""The plan runs unchanged through nnsight's remote path.

``remote=True`` needs an NDIF server and an API key, so these tests use nnsight's own dry run of that
path (``remote="local"``: the trace is serialised exactly as for the server, deserialised with local
modules hidden, and run here) and go one step further: steerkit itself is made unimportable while the
request is deserialised, as on a server where it is not installed. The steered logits, gate values and
generations must equal a local run bit for bit.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
from nnsight.intervention.backends.local import LocalSimulationBackend

import steerkit.runtime_nnsight as runtime
from steerkit.runtime_nnsight import steer
from steerkit.testing.fixtures import RECIPE_HEAD, TINY_WORKDIR_RECIPE, make_plan, tiny, tiny_workdir

PLANS = {
    "always_on": "gate: {rule: always_on}\nsteer: {op: add, layers: {start: 0}, strength: {lambda: -1.0}}\n",
    "linear_shared": "gate: {rule: ridge_linear, forget: [{kind: jsonl, path: f}], retain: [{kind: jsonl, path: r}], "
                     "layer: 0, read: {positions: all_prompt, pool: mean}}\n"
                     "steer: {op: add, layers: {start: 0}, strength: {lambda: -1.5}}\n",
    "prototype_all_steps": "gate: {rule: prototype, forget: [{kind: jsonl, path: f}], "
                           "retain: [{kind: jsonl, path: r}], layer: 0}\n"
                           "steer: {op: add, layers: {start: 0}, positions: [all_prompt, generated], "
                           "phase: all_steps, strength: {lambda: -1.5}}\n",
}


class _NotInstalled:
    """Import hook: steerkit does not exist (the NDIF server has torch, transformers and nnsight only)."""

    def find_spec(self, name, path=None, target=None):
        if name == "steerkit" or name.startswith("steerkit."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


@pytest.fixture
def server_without_steerkit(monkeypatch):
    """nnsight's dry-run backend, with steerkit also unimportable while the request is deserialised."""
    hide, restore = LocalSimulationBackend._hide_local_modules, LocalSimulationBackend._restore

    def hide_steerkit(self):
        hidden = hide(self)
        for name in [n for n in sys.modules if n == "steerkit" or n.startswith("steerkit.")]:
            hidden["modules"][name] = sys.modules.pop(name)
        sys.meta_path.insert(0, _NotInstalled())
        return hidden

    def restore_steerkit(self, hidden):
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _NotInstalled)]
        restore(self, hidden)

    monkeypatch.setattr(LocalSimulationBackend, "_hide_local_modules", hide_steerkit)
    monkeypatch.setattr(LocalSimulationBackend, "_restore", restore_steerkit)


def _nnsight_model(t):
    from nnsight.modeling.transformers import TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformersModel(t.model, processor=t.processor, tokenizer=t.tokenizer)


@pytest.fixture(scope="module")
def llava():
    from steerkit.session import ModelSession

    t = tiny("llava")
    return t, ModelSession.from_objects(t.model, t.processor, t.tokenizer)


@pytest.mark.parametrize("kind", list(PLANS))
def test_remote_dry_run_steers_exactly_like_a_local_run(kind, llava, server_without_steerkit):
    t, s = llava
    plan = make_plan(s.adapter.name, s.dims, RECIPE_HEAD + PLANS[kind])
    enc = t.inputs(["What is in this image?", "Describe the picture in one sentence please now."], seed=3)
    with steer(t.model, plan) as st:
        ref, ref_gates = st.forward(enc, return_gates=True)
        ref_ids = st.generate(enc, 4)
    unsteered = t.model(**enc).logits
    with steer(_nnsight_model(t), plan, s.image_token_id, remote="local") as st:
        got, got_gates = st.forward(enc, return_gates=True)
        got_ids = st.generate(enc, 4)
    assert (ref - unsteered).abs().max() > 1e-4  # the plan does steer, so equality below means something
    assert torch.equal(got, ref)
    assert got_gates.keys() == ref_gates.keys()
    assert all(torch.equal(got_gates[k], ref_gates[k]) for k in ref_gates)
    assert torch.equal(got_ids, ref_ids)


def test_dry_run_fails_when_steerkit_is_not_shipped(llava, server_without_steerkit, monkeypatch):
    """The check above can fail: without shipping steerkit's source, the 'server' cannot rebuild the trace."""
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES

    t, s = llava
    monkeypatch.setattr(runtime, "_ship_steerkit_by_value", lambda: None)
    monkeypatch.setattr("cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES", _PICKLE_BY_VALUE_MODULES - {"steerkit"})
    plan = make_plan(s.adapter.name, s.dims, RECIPE_HEAD + PLANS["always_on"])
    enc = t.inputs(["What is in this image?"], seed=3)
    with steer(_nnsight_model(t), plan, s.image_token_id, remote="local") as st:
        with pytest.raises(ModuleNotFoundError, match="steerkit"):
            st.forward(enc)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved tiny LLaVA, a small world and an extracted bundle, for the CLI."""
    from click.testing import CliRunner

    from steerkit.cli.main import cli

    root = tiny_workdir(tmp_path_factory.mktemp("remote_cli"))
    (root / "recipe.yaml").write_text(TINY_WORKDIR_RECIPE.format(name="remote-cli") + "gate: {rule: always_on}\n"
                                      "steer: {layers: {start: 0}, strength: {lambda: -8.0}}\n"
                                      "bundle: {path: bundle.safetensors}\n")
    image = sorted((root / "world/contrast/images").iterdir())[0].name
    (root / "prompts.jsonl").write_text(json.dumps({"prompt": "Who is this?", "image": f"world/contrast/images/{image}"})
                                        + "\n" + json.dumps({"prompt": "Where was the person born?"}) + "\n")
    r = CliRunner().invoke(cli, ["extract", str(root / "recipe.yaml")])
    assert r.exit_code == 0, r.output
    return root


def _apply(root, out, *extra):
    from click.testing import CliRunner

    from steerkit.cli.main import cli

    r = CliRunner().invoke(cli, ["apply", str(root / "recipe.yaml"), "--input", str(root / "prompts.jsonl"), "--out",
                                 str(out), "--compare", "--max-new-tokens", "4", *extra])
    return r, [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else None


def test_cli_apply_through_the_remote_path_answers_like_a_local_run(checkpoint, tmp_path, server_without_steerkit):
    r_local, local = _apply(checkpoint, tmp_path / "local.jsonl")
    assert r_local.exit_code == 0, r_local.output
    r_remote, remote = _apply(checkpoint, tmp_path / "remote.jsonl", "--remote", "local")
    assert r_remote.exit_code == 0, r_remote.output
    assert remote == local and len(local) == 2
    assert any(row["steered"] != row["unsteered"] for row in local)  # the bundle does steer these prompts


def test_cli_remote_refuses_what_a_server_cannot_run(checkpoint, tmp_path):
    r, _ = _apply(checkpoint, tmp_path / "a.jsonl", "--remote", "ndif")
    assert r.exit_code == 2 and "SK771" in r.output and "Traceback" not in r.output, r.output
    r, _ = _apply(checkpoint, tmp_path / "b.jsonl", "--remote", "somewhere")
    assert r.exit_code == 2 and "SK770" in r.output, r.output
    r, _ = _apply(checkpoint, tmp_path / "c.jsonl", "--remote", "local", "--set", "bundle.path=missing.safetensors")
    assert r.exit_code == 2 and "SK772" in r.output and not (checkpoint / "missing.safetensors").exists(), r.output


def test_cli_eval_through_the_remote_path_scores_like_a_local_run(checkpoint, tmp_path):
    from click.testing import CliRunner

    from steerkit.cli.main import cli

    results = {}
    for name, extra in (("local", []), ("remote", ["--remote", "local"])):
        r = CliRunner().invoke(cli, ["eval", str(checkpoint / "recipe.yaml"), "--out", str(tmp_path / name),
                                     "--set", "eval.data=world", "--set", "eval.limit=2",
                                     "--set", "eval.splits=[forget,retain]", "--set", "eval.tasks=[classification]",
                                     *extra])
        assert r.exit_code == 0, r.output
        results[name] = [json.loads(line) for line in (tmp_path / name / "items.jsonl").read_text().splitlines()]
    assert results["remote"] == results["local"] and len(results["local"]) >= 8


def test_an_unreachable_server_is_a_steerkit_error(llava):
    """Transport failures surface as SK510 with a hint, never as a raw traceback from the HTTP stack."""
    from steerkit.errors import SteeringRuntimeError

    t, s = llava
    plan = make_plan(s.adapter.name, s.dims, RECIPE_HEAD + PLANS["always_on"])
    model = _nnsight_model(t)
    model._remoteable_model_key = lambda: "org/model"  # a module-built model has no Hub id to send
    with steer(model, plan, s.image_token_id, remote="http://127.0.0.1:9") as st:  # port 9: nothing listens
        with pytest.raises(SteeringRuntimeError) as e:
            st.forward(t.inputs(["What is in this image?"], seed=3))
    assert e.value.problems[0].code == "SK510" and "API key" in e.value.problems[0].hint


def test_an_embedded_model_is_refused_for_ndif_before_anything_is_loaded(monkeypatch):
    import steerkit.models.embedded as embedded
    from steerkit.errors import RecipeError
    from steerkit.recipe import ModelSpec
    from steerkit.remote import load_remote_session

    monkeypatch.setattr(embedded, "ensure_embedded", lambda *a, **k: pytest.fail("would train the embedded model"))
    with pytest.raises(RecipeError) as e:
        load_remote_session(ModelSpec(id="embedded:llava"), None, True)
    assert e.value.problems[0].code == "SK771"
