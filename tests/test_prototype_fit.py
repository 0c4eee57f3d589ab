"""Prototype gate fitting (steerkit.extraction._fit_prototypes) on synthetic pooled activations.

The set-up mimics text prompts: every prompt = a large template component shared by everyone (which
question, which wording) + a small person component (the name). Cosine after per-dimension whitening is
dominated by the template; whitening by the within-person covariance divides the template out.
"""

from __future__ import annotations

import pytest
import torch

from steerkit.data.items import ContrastItem
from steerkit.extraction import _fit_prototypes, _holdout_split, _within_person
from steerkit.gates import gate_auc
from steerkit.ops import prototype_gate
from steerkit.recipe import parse_recipe_text

D, PER_PERSON = 24, 8


def _people(gen, n, template_basis, tag):
    items, rows = [], []
    for p in range(n):
        person = torch.randn(D, generator=gen) * 0.6
        for j in range(PER_PERSON):
            template = template_basis @ (torch.randn(template_basis.shape[1], generator=gen) * 4.0)
            rows.append(person + template + 0.2 * torch.randn(D, generator=gen))
            task = ("classification", "generation")[j % 2]
            items.append(ContrastItem(prompt="q", id=f"{tag}{p:03d}", source=f"forget:{task}"))
    return items, torch.stack(rows)


def _fit(score: str, group_by: str = "id_modality"):
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(D, 6, generator=gen))[0]
    forget, F = _people(gen, 4, basis, "f")
    retain, R = _people(gen, 60, basis, "r")
    loaded = parse_recipe_text(
        "name: t\nmodel: {id: tiny}\nbundle: {path: b.safetensors}\n"
        "gate: {rule: prototype, forget: [{kind: jsonl, path: f.jsonl}], retain: [{kind: jsonl, path: r.jsonl}],"
        f" layer: 0, text_score: {score}, retain_open_rate: 0.02, group_by: {group_by}}}\n"
        "steer: {op: add, layers: [0], strength: {lambda: -1.0}}\n")
    ids = [r.id for r in retain]
    held = _holdout_split(ids, 0.2, 0)
    fit_idx = [i for i, x in enumerate(ids) if x not in held]
    held_idx = [i for i, x in enumerate(ids) if x in held]
    calib = _holdout_split([ids[i] for i in fit_idx], 0.25, 1)
    calib_idx = [i for i in fit_idx if ids[i] in calib]
    probe_idx = [i for i in fit_idx if ids[i] not in calib]
    tensors, data = {}, {}
    meta = _fit_prototypes(loaded, "resid_pre", 0, forget, retain, F, R, probe_idx, calib_idx, held_idx, fit_idx,
                           tensors, data)
    return meta, tensors, F, R[held_idx]


def _gate(meta, tensors, X):
    k = meta["prototypes"]
    stack = lambda kind: torch.stack([tensors[f"gate_{kind}.resid_pre.0.{i}"] for i in range(k)])  # noqa: E731
    whiten = [tensors[f"gate_whiten.resid_pre.0.{i}"] for i in range(meta["whitening_matrices"])]
    return prototype_gate(X[:, None, :], torch.ones(X.shape[0], 1, dtype=torch.bool),
                          torch.zeros(X.shape[0], dtype=torch.bool), stack("center"), stack("scale"),
                          stack("proto"), torch.tensor(meta["prototype_image"]), torch.tensor(meta["prototype_scale"]),
                          torch.tensor(meta["prototype_bias"]), (0.0, 1.0), torch.tensor(meta["prototype_linear"]),
                          torch.stack(whiten) if whiten else None, torch.tensor(meta["prototype_whiten"]))


def test_within_person_whitening_separates_what_per_dimension_whitening_cannot():
    aucs = {}
    for score in ("cosine", "whitened_cosine"):
        meta, tensors, F, R_held = _fit(score)
        aucs[score] = meta["fit"]["0"]["auc_heldout_retain"]
        c_f, c_r = _gate(meta, tensors, F), _gate(meta, tensors, R_held)
        if score == "whitened_cosine":
            assert meta["whitening_matrices"] == 1 and tensors["gate_whiten.resid_pre.0.0"].shape == (D, D)
            assert float((c_f >= 0.999).float().mean()) >= 0.45  # forget_open_quantile 0.5 maps to c = 1
            assert float((c_r > 0).float().mean()) <= 0.10  # calibrated to 2 % on other retain people
            assert gate_auc(c_f, c_r) > 0.95
    assert aucs["whitened_cosine"] > 0.97 and aucs["cosine"] < aucs["whitened_cosine"] - 0.1, aucs


@pytest.mark.parametrize("score", ["discriminant", "whitened_cosine"])
def test_fit_is_deterministic_and_manifest_lists_match(score):
    m1, t1, _, _ = _fit(score)
    m2, t2, _, _ = _fit(score)
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    k = m1["prototypes"]
    assert k == 4 and all(len(m1[f"prototype_{n}"]) == k for n in ("image", "linear", "whiten", "scale", "bias"))
    assert m1["prototype_linear"] == [score == "discriminant"] * k


def test_within_person_residuals():
    X = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0], [9.0, 9.0]])
    r = _within_person(X, ["a", "a", "b", "b", "c"])  # c has one row: no within-person spread
    assert torch.equal(r, torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]]))
    assert torch.equal(_within_person(X[:2], ["a", "a"]), X[:2] - X[:2].mean(0))  # one group: fall back


def test_task_grouping_gives_one_prototype_per_person_and_question_type():
    meta, tensors, F, R_held = _fit("whitened_cosine", "id_modality_task")
    assert meta["prototypes"] == 4 * 2  # 4 forget people x 2 question types (one modality)
    assert meta["group_by"] == "id_modality_task"
    assert float((_gate(meta, tensors, F) > 0).float().mean()) > 0.5
