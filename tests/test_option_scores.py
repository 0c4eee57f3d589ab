"""Option scores (issue #12) on the tiny LLaVA: the prefill's first-answer-token distribution, steered or not."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from steerkit.data.items import EvalItem
from steerkit.data.prompts import REFUSAL, classification_prompt
from steerkit.errors import SteeringRuntimeError
from steerkit.eval_job import make_fns
from steerkit.inputs import render_prompt
from steerkit.option_scores import first_answer_tokens, option_scores
from steerkit.runtime_nnsight import steer
from steerkit.session import ModelSession
from steerkit.testing.fixtures import RECIPE_HEAD, make_plan, tiny

OPTIONS = {"A": "pilot", "B": "baker", "C": "nurse", "D": "tailor"}


def _session(name):
    t = tiny(name, std=0.3)
    return ModelSession.from_objects(t.model, t.processor, t.tokenizer)


@pytest.fixture(scope="module")
def session():
    return _session("llava")


def _items():
    img = Image.new("RGB", (30, 30), (200, 40, 90))
    q = classification_prompt("Which option is the occupation of the person in the image?", OPTIONS)
    base = EvalItem("001", "forget", "classification", "vqa", q, img, "B", 0, dict(OPTIONS))
    text = dataclasses.replace(base, modality="qa", image=None, prompt=q.replace("the person in the image", "Tavi"))
    return [base, text, dataclasses.replace(text, history=((text.prompt, REFUSAL),), prompt="Please answer.\n"
                                            + text.prompt), dataclasses.replace(text, assistant_prefix="The answer is")]


def _teacher_forced(session, item, letter):
    """log P(letter's distinct token) read off a teacher-forced pass over prompt + ' ' + letter."""
    shared, ids = first_answer_tokens(session, item, list(OPTIONS))
    enc = session.encode([item.prompt], [item.image], answers=[letter], histories=[item.history],
                         prefixes=[item.assistant_prefix])
    pos = (enc.labels[0] != -100).nonzero()[0, 0] + len(shared)  # the distinct token's position
    with torch.no_grad():
        logp = session.model(**enc.inputs).logits[0, pos - 1].float().log_softmax(-1)
    return float(logp[ids[list(OPTIONS).index(letter)]])


@pytest.mark.parametrize("name", ["llava", "qwen2_5_vl"])  # Qwen2.5-VL: per-token type ids follow the tokens
def test_scores_are_the_teacher_forced_probabilities(name):
    session = _session(name)
    items = _items()
    scores = option_scores(session, items, batch_size=2)
    assert len(scores) == len(items) and all(list(s) == list(OPTIONS) for s in scores)
    for item, sc in zip(items, scores):
        for letter in OPTIONS:
            assert sc[letter] == pytest.approx(_teacher_forced(session, item, letter), abs=1e-4)
    # a conversation or a forced prefix is a different prompt: different scores
    assert scores[1] != scores[2] and scores[1] != scores[3]


def test_steered_scores_move_with_the_strength(session):
    items = _items()[:2]
    plain = option_scores(session, items)
    yaml = RECIPE_HEAD + "gate: {rule: always_on}\nsteer: {layers: {start: 0}, strength: {lambda: %s}}\n"
    for lam, same in ((0.0, True), (4.0, False)):
        plan = make_plan(session.adapter.name, session.dims, yaml % lam)
        with steer(session.model, plan, session.image_token_id) as st:
            got = option_scores(session, items, st)
        close = all(g[k] == pytest.approx(p[k], abs=1e-4) for g, p in zip(got, plain) for k in OPTIONS)
        assert close is same, lam


def test_generation_sees_the_conversation(session):
    items = _items()
    gen, _ = make_fns(session)
    answers = gen(items[1:], 3)
    direct = [session.generate([i.prompt], [i.image], 3, histories=[i.history], prefixes=[i.assistant_prefix])[0]
              for i in items[1:]]
    assert answers == direct
    text = render_prompt(session.processor, session.tokenizer, session.adapter.prompt, "again?", True,
                         history=(("first?", REFUSAL),), assistant_prefix="The answer is")
    assert text.index("first?") < text.index(REFUSAL) < text.index("again?") < text.index("The answer is")
    assert text.count("<image>") == 1 and text.rstrip().endswith("The answer is")


def test_refuses_items_it_cannot_score(session):
    item = dataclasses.replace(_items()[1], task="cloze", options=None)
    with pytest.raises(SteeringRuntimeError, match="multiple-choice") as exc:
        option_scores(session, [item])
    assert "SK642" in str(exc.value)
