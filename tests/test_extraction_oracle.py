"""An oracle for extraction: the bundle's direction at every layer equals the mean difference of
last-prompt-token residuals read with plain torch forward-pre-hooks, one prompt at a time (no padding,
no nnsight, no steerkit pooling), on the same prompts and images; for an ungated and a gated recipe."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from steerkit.testing.fixtures import tiny_workdir

PROMPTS = ["Who is the person in this picture?", "Where was this person born?", "What does this person do?"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tiny_workdir(tmp_path_factory.mktemp("oracle"))
    images = sorted((root / "world/contrast/images").iterdir())[:2]
    for i, im in enumerate(images):
        shutil.copy(im, root / f"face{i}.png")
    # the two sides differ in their prompts (and one row has no image), so the direction is not zero
    recall = [{"prompt": p, "image": f"face{i % 2}.png"} for i, p in enumerate(PROMPTS)] + [{"prompt": "Tell me."}]
    erasure = [{"prompt": "Refuse to say: " + p.lower(), "image": f"face{i % 2}.png"} for i, p in enumerate(PROMPTS)]
    (root / "recall.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recall))
    (root / "erasure.jsonl").write_text("".join(json.dumps(r) + "\n" for r in erasure))
    return root


def _recipe(root, gate: str) -> str:
    gate_yaml = "gate: {rule: always_on}\n" if gate == "always_on" else """gate:
  rule: ridge_linear
  forget: [{kind: mllmu, path: world, split: forget, tasks: [classification]}]
  retain: [{kind: mllmu, path: world, split: retain, tasks: [classification]}]
  holdout: 0.25
"""
    path = root / f"{gate}.yaml"
    path.write_text(f"""schema_version: 1
name: oracle-{gate.replace('_', '-')}
model: {{id: model}}
direction:
  method: mean_diff
  recall: {{source: {{kind: jsonl, path: recall.jsonl}}}}
  erasure: {{source: {{kind: jsonl, path: erasure.jsonl}}}}
{gate_yaml}steer: {{layers: {{start: 0}}, strength: {{lambda: -1.0}}}}
""")
    return str(path)


def _hook_means(session, rows: list[dict], root) -> dict[int, torch.Tensor]:
    """Mean over rows of the input to each decoder layer at the prompt's last token, via plain hooks."""
    from PIL import Image

    layers = session.model.model.language_model.layers
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}

    def hook(i):
        def read(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            seen[i].append(h[0, -1].detach().double())
        return read

    handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for r in rows:  # one row per pass: no padding, so the last token is the last prompt token
            image = Image.open(root / r["image"]).convert("RGB") if r.get("image") else None
            batch = session.encode([r["prompt"]], [image])
            with torch.no_grad():
                session.model(**batch.inputs)
    finally:
        for h in handles:
            h.remove()
    return {i: torch.stack(v).mean(0) for i, v in seen.items()}


@pytest.mark.parametrize("gate", ["always_on", "ridge_linear"])
def test_direction_equals_hooked_mean_difference(root, gate):
    import steerkit as sk

    s = sk.load(_recipe(root, gate))
    bundle = sk.extract(s)
    rows = lambda name: [json.loads(x) for x in (root / name).read_text().splitlines()]  # noqa: E731
    recall, erasure = _hook_means(s.model, rows("recall.jsonl"), root), _hook_means(s.model, rows("erasure.jsonl"), root)
    assert bundle.layers("resid_pre") == [0, 1]
    for layer in (0, 1):
        expected = (recall[layer] - erasure[layer]).float()
        got = bundle.direction("resid_pre", layer)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # layer 0 reads the embedding of the chat template's last token, the same on both sides (zero);
    # layer 1 has attended over the prompt: a real difference, not two zeros agreeing
    assert (recall[1] - erasure[1]).norm() > 1e-3
    assert bundle.manifest.gate["rule"] == gate
    assert ("gate.resid_pre.1" in bundle.tensors) == (gate == "ridge_linear")
