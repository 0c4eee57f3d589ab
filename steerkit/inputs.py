"""Prompt rendering and batch encoding: the one place that turns (text, image, answer) into tensors.

Training, evaluation, extraction, PGD and ``apply`` all encode through here, so the chat template,
padding side, image placeholders and the "last prompt token" are identical everywhere. Answers are
appended after the rendered prompt for teacher forcing, with labels on the answer tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from PIL import Image

from .adapter import PromptSpec
from .positions import last_real_index


@dataclass
class EncodedBatch:
    inputs: dict[str, torch.Tensor]  # pass as model(**inputs) / generate(**inputs)
    prompt_last: torch.Tensor  # [B] index of the last prompt token of each row
    labels: Optional[torch.Tensor] = None  # [B, T], -100 except answer tokens (teacher forcing)
    answer_mask: Optional[torch.Tensor] = None  # [B, T] bool

    @property
    def batch_size(self) -> int:
        return int(self.inputs["input_ids"].shape[0])


def render_prompt(processor: Any, tokenizer: Any, prompt_spec: PromptSpec, text: str, has_image: bool,
                  history: Sequence[tuple[str, str]] = (), assistant_prefix: str = "") -> str:
    """User text -> the model's prompt string (chat template + generation prompt), no answer.

    ``history``: earlier (user, assistant) turns, the image attached to the first user turn;
    ``assistant_prefix``: text the answer is forced to start with (both for re-elicitation attacks).
    """
    template_owner = processor if getattr(processor, "chat_template", None) else (
        tokenizer if getattr(tokenizer, "chat_template", None) else None)
    turns = [*history, (text, None)]
    if prompt_spec.style == "chat_template" and template_owner is not None:
        messages: list[dict[str, Any]] = []
        for i, (user, reply) in enumerate(turns):
            content = ([{"type": "image"}] if has_image and i == 0 else []) + [{"type": "text", "text": user}]
            messages.append({"role": "user", "content": content})
            if reply is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
        out = template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        parts = []
        for i, (user, reply) in enumerate(turns):
            image = prompt_spec.image_placeholder if has_image and i == 0 else ""
            parts.append(prompt_spec.format.replace("{image}", image).replace("{text}", user)
                         + (f" {reply}\n" if reply is not None else ""))
        out = "".join(parts)
    return out + (" " + assistant_prefix.strip() if assistant_prefix.strip() else "")


def encode(processor: Any, tokenizer: Any, prompt_spec: PromptSpec, prompts: Sequence[str],
           images: Sequence[Optional[Image.Image]], answers: Optional[Sequence[str]] = None, *,
           padding_side: str = "left", max_length: Optional[int] = None,
           histories: Optional[Sequence[Sequence[tuple[str, str]]]] = None,
           prefixes: Optional[Sequence[str]] = None) -> EncodedBatch:
    """Encode a batch. With ``answers``, each row is prompt + ' ' + answer + EOS and labels cover the answer.

    ``histories`` / ``prefixes`` (one per row) add earlier turns / a forced answer start (see render_prompt).
    """
    if len(images) != len(prompts) or (answers is not None and len(answers) != len(prompts)):
        raise ValueError("prompts, images and answers must have the same length")
    histories = histories or [()] * len(prompts)
    prefixes = prefixes or [""] * len(prompts)
    texts = [render_prompt(processor, tokenizer, prompt_spec, p, im is not None, h, x)
             for p, im, h, x in zip(prompts, images, histories, prefixes)]
    answer_ids: list[list[int]] = []
    if answers is not None:
        eos = tokenizer.eos_token or ""
        suffixes = [" " + a.strip() + eos for a in answers]
        texts = [t + s for t, s in zip(texts, suffixes)]
        answer_ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in suffixes]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        present = [im.convert("RGB") for im in images if im is not None]
        kwargs: dict[str, Any] = dict(text=texts, return_tensors="pt", padding=True)
        if max_length is not None:
            kwargs.update(truncation=True, max_length=max_length)
        if processor is not None and present and len(present) == len(images):
            # one list per prompt: the only layout Gemma3, Mllama and SmolVLM accept for batches > 1
            enc = processor(images=[[im] for im in present], **kwargs)
        elif processor is not None and present:
            enc = processor(images=present, **kwargs)  # mixed batch: LLaVA and Qwen-VL take a flat list
        elif processor is not None and hasattr(processor, "tokenizer"):
            enc = processor.tokenizer(**kwargs)
        else:
            enc = tokenizer(**kwargs)
    finally:
        tokenizer.padding_side = old_side
    inputs = {k: v for k, v in dict(enc).items() if isinstance(v, torch.Tensor)}
    inputs.pop("labels", None)  # PaliGemma returns labels when given suffixes; we build our own
    attn = inputs["attention_mask"]
    last = last_real_index(attn)
    if answers is None:
        return EncodedBatch(inputs, last)
    ids = inputs["input_ids"]
    labels = torch.full_like(ids, -100)
    answer_mask = torch.zeros_like(ids, dtype=torch.bool)
    prompt_last = last.clone()
    for b, a_ids in enumerate(answer_ids):
        end = int(last[b]) + 1
        start = end - len(a_ids)
        labels[b, start:end] = ids[b, start:end]
        answer_mask[b, start:end] = True
        prompt_last[b] = start - 1
    return EncodedBatch(inputs, prompt_last, labels, answer_mask)
