"""Fixtures of the unlearning tests: a fresh tiny LLaVA session (mutated by training) and toy pairs."""

from __future__ import annotations

import pytest

from steerkit.data.items import TrainPair
from steerkit.models.zoo import build_tiny, tiny_image
from steerkit.session import ModelSession
from steerkit.unlearn.config import parse_unlearn_config


@pytest.fixture
def session():
    """A new tiny LLaVA each time (training changes it in place)."""
    t = build_tiny("llava", std=0.05)
    return ModelSession.from_objects(t.model, t.processor, t.tokenizer)


@pytest.fixture
def pairs():
    forget = [TrainPair("What is in this image?", "the cat sees a blue house.", tiny_image(i), "f1") for i in range(3)]
    forget.append(TrainPair("Who is my friend?", "my friend reads the green tree.", None, "f2"))
    retain = [TrainPair("Describe the picture in one sentence.", "a dog likes the bright sun.", tiny_image(10 + i), "r")
              for i in range(3)]
    retain.append(TrainPair("Who is the teacher?", "the teacher paints an open window.", None, "r2"))
    return forget, retain


@pytest.fixture
def make_config():
    """make_config(method, mode="lora", **train) -> a validated UnlearnConfig (lr 1e-2, 3 steps, batch 2)."""

    def make(method: str, mode: str = "lora", **train):
        train = {"lr": 1e-2, "steps": 3, "batch_size": 2, **train}
        body = ", ".join(f"{k}: {v}" for k, v in train.items())
        return parse_unlearn_config(f"name: t\nmethod: {method}\nmode: {mode}\nmodel: {{id: tiny}}\n"
                                    f"train: {{{body}}}\nseed: 0\n").config

    return make
