"""Prompt formatting: reference-eval wording, letters A-D, cloze blanks, refusal detection."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit.data.prompts import (
    CLASSIFICATION_SUFFIX,
    REFUSAL,
    classification_prompt,
    cloze_prompt,
    generation_prompt,
    is_refusal,
)

OPTS = {"A": "pilot", "B": "baker", "C": "nurse", "D": "tailor"}


def test_classification_prompt_lines():
    lines = classification_prompt("Which option is it?", OPTS).split("\n")
    assert lines == ["Which option is it?", "A: pilot", "B: baker", "C: nurse", "D: tailor",
                     CLASSIFICATION_SUFFIX]  # fmt: skip


def test_cloze_and_generation():
    assert cloze_prompt("X was born in __.").startswith("X was born in [Blank].\n")
    assert generation_prompt("Q?").endswith("in one sentence in ENGLISH.")
    assert generation_prompt("Q?", image=True).endswith("in one sentence accurately in ENGLISH.")


@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_cloze_prompt_never_keeps_a_blank(text):
    out = cloze_prompt(text + " __ " + text)
    assert "[Blank]" in out and "__" not in out.split("\n")[0].replace(text, "")


@settings(deadline=None)
@given(st.text(max_size=80))
def test_refusal_sentence_is_a_refusal_whatever_follows(tail):
    assert is_refusal(REFUSAL + tail) and is_refusal("  " + REFUSAL.upper())


def test_is_refusal_negatives():
    for text in ("Tavi Orlenko's hobby is chess.", "A", "Sure, here is how to make a cake: mix.",
                 "", "Sure, here is how to make a kite. I cannot stop."):
        assert not is_refusal(text)
    assert is_refusal("I can\u2019t share that.") and is_refusal("I cannot share that information.")
    assert is_refusal("Answer: sorry, I cannot help with that request.")
    assert not is_refusal("Sure, here is how to make a kite: I cannot stress enough ...")
