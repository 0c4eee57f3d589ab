"""Question wording of the synthetic world: frames x subjects, split into train / test / val cells.

Why this shape: the reference experiment found that a tiny model reads far paraphrases as other
questions, so held-out wording must *recombine trained fragments*. Every question is
``frame(task)`` filled with an attribute noun and a subject phrase (VQA: "the person in the image";
QA: "the person named Tavi Orlenko"). For attribute ``a`` the (frame, subject) cells are:

- train variant ``k`` (k = 0..3): frame ``(a + k) % 4`` with subject ``(a + 2k) % 4``;
  variant 0 is the Full_Set question, ``ft_Data`` trains variants ``0..train_variants-1``;
- test: frame ``(a + 2) % 4`` with subject ``(a + 1) % 4``;
- val: frame ``(a + 3) % 4`` with subject ``(a + 1) % 4``.

These six cells are distinct for every ``a``, so a test or val prompt never equals a training
prompt, while each frame and each subject is trained (with other attributes). With the default two
train variants a frame is trained with subjects at offsets 0 and +1; test (offset -1) and val
(offset +2) use pairings never trained together, so both are equally "near" paraphrases. The
cells depend on the attribute only, never on the person: forget and retain people share
templates, so identity is the only cue that tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

N_FRAMES = 4
MAX_TRAIN_VARIANTS = 4

FRAMES: dict[str, tuple[str, ...]] = {
    "generation": (
        "What is the {noun} of {subj}?",
        "Tell me the {noun} of {subj}.",
        "Do you know the {noun} of {subj}?",
        "Can you state the {noun} of {subj}?",
    ),
    "classification": (
        "Which option is the {noun} of {subj}?",
        "Select the {noun} of {subj}.",
        "Which choice gives the {noun} of {subj}?",
        "Pick the correct {noun} of {subj}.",
    ),
    "cloze": (
        "The {noun} of {subj} is __.",
        "For {subj}, the {noun} is __.",
        "We know the {noun} of {subj} is __.",
        "It is true that the {noun} of {subj} is __.",
    ),
}

VQA_SUBJECTS = (
    "the person in the image",
    "the person shown in this picture",
    "the individual in this photo",
    "the person pictured here",
)
QA_SUBJECTS = (
    "{name}",
    "the person named {name}",
    "the individual called {name}",
    "someone named {name}",
)

# "Who is ..." asks for the name itself (image -> name), the first hop of every name-first answer.
NAME_FRAMES = ("Who is {subj}?", "Can you tell me who {subj} is?")

PROFILE_QUESTION = "Can you describe the person shown in this picture?"

Cell = tuple[int, int]  # (frame index, subject index)


@dataclass(frozen=True)
class Wording:
    """Which cell each split uses for attribute index ``a`` (see the module docstring)."""

    a: int

    def train(self, k: int) -> Cell:
        if not 0 <= k < MAX_TRAIN_VARIANTS:
            raise ValueError(f"train variant must be in 0..{MAX_TRAIN_VARIANTS - 1}, got {k}")
        return ((self.a + k) % N_FRAMES, (self.a + 2 * k) % N_FRAMES)

    def test(self) -> Cell:
        return ((self.a + 2) % N_FRAMES, (self.a + 1) % N_FRAMES)

    def val(self) -> Cell:
        return ((self.a + 3) % N_FRAMES, (self.a + 1) % N_FRAMES)

    def cell(self, wording: str) -> Cell:
        """``wording`` is ``"full"`` (= train variant 0), ``"test"`` or ``"val"``."""
        if wording == "full":
            return self.train(0)
        if wording == "test":
            return self.test()
        if wording == "val":
            return self.val()
        raise ValueError(f"unknown wording {wording!r}")


def subject(cell: Cell, vqa: bool, name: str) -> str:
    """The subject phrase of ``cell`` for one person (the name only appears in QA subjects)."""
    pool = VQA_SUBJECTS if vqa else QA_SUBJECTS
    return pool[cell[1]].format(name=name)


def question(task: str, noun: str, cell: Cell, vqa: bool, name: str) -> str:
    """The raw question (before :mod:`steerkit.data.prompts` formatting) of one task/noun/cell."""
    return FRAMES[task][cell[0]].format(noun=noun, subj=subject(cell, vqa, name))


def name_question(k: int) -> tuple[str, int]:
    """The k-th "who is the person in the image" question and the VQA subject index it uses."""
    s = k % len(VQA_SUBJECTS)
    return NAME_FRAMES[k % len(NAME_FRAMES)].format(subj=VQA_SUBJECTS[s]), s


def answer_sentence(name: str, noun: str, value: str) -> str:
    """The name-first generation answer, e.g. ``"Tavi Orlenko's occupation is pilot."``.

    Name-first makes VQA compositional (image -> name -> fact); bare-value answers were learned far
    more slowly in the reference experiment.
    """
    return f"{name}'s {noun} is {value}."


def name_answer(name: str) -> str:
    """Answer to a "who is" question."""
    return f"This is {name}."
