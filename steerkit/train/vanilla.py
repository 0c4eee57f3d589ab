"""Vanilla fine-tuning: teach a model the profiles (and refusals) of an MLLMU-layout dataset.

Why it looks like this: MLLMU-Bench (and MLLMEraser after it) first fine-tunes the base model on the
fictitious profiles, then unlearns from that "vanilla" checkpoint. The recipe is the one that
worked on CPU in the reference experiment (docs/toyworld-lessons.md): answer-only loss, AdamW with
betas (0.9, 0.98), linear warm-up then cosine decay to 10 %, gradient clipping at 1.0, batch 48.

Batches are encoded with :meth:`ModelSession.encode` (right padding, labels on the answer tokens
only), the same function evaluation and extraction use, so a prompt is tokenised identically when
it is trained and when it is scored. Image and text-only pairs share batches: both the LLaVA and
the (no-video) Qwen2.5-VL processors accept a batch where only some rows carry an image, and
each row's logits equal those of the row encoded alone. Runs are deterministic for a seed and a
thread count (seeded torch RNG, a private shuffling generator, no dropout in the small models).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from ..data.items import TrainPair
from ..errors import DataError, Problem


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a vanilla fine-tune (recorded in reports and cache keys)."""

    # Defaults: the recipe of embedded:llava (a small model trained from scratch on a synthetic world).
    epochs: float = 12.0
    batch_size: int = 48
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_steps: int = 40
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0
    seed: int = 0
    max_steps: Optional[int] = None  # stop early (tests); the schedule still spans the full run
    length_grouping: int = 16  # sort pairs by length within windows of this many batches (0: off)
    threads: Optional[int] = None  # torch.set_num_threads during training (None: leave as is)
    # Image augmentation (0: off): each time a training image is used it is replaced by a mild random
    # variant (edge-padded shift of up to ~6 % of its size, colour gain +/- image_jitter, Gaussian
    # noise), so recognising a person does not hinge on exact pixels.
    image_jitter: float = 0.0
    # Focus (0: off): after a pair's answer loss (mean per token) falls below focus_threshold it is
    # revisited only with probability focus_revisit per pass, so the step budget (epochs x pairs)
    # goes to what is not learned yet. Run time is unchanged; more of it goes to hard pairs.
    focus_threshold: float = 0.0
    focus_revisit: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        # options at their "off" value are left out, so adding an option does not change the cache key
        # (and force a retrain) of models trained before it existed
        for name in ("image_jitter", "shuffle_options", "focus_threshold"):
            if name in d and not d[name]:
                del d[name]
        if "focus_threshold" not in d:
            del d["focus_revisit"]  # meaningless without focus
        return d


@dataclass
class TrainReport:
    """What a fine-tune did."""

    steps: int
    epochs: float
    pairs: int
    wall_s: float
    final_loss: float  # mean loss over the last epoch (or the last 50 steps when shorter)
    epoch_losses: list[float] = field(default_factory=list)
    first_loss: float = float("nan")
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_session(session_or_parts: Any):
    from ..session import ModelSession

    if isinstance(session_or_parts, ModelSession):
        return session_or_parts
    parts = tuple(session_or_parts)
    if len(parts) not in (3, 4):
        raise TypeError("pass a ModelSession or (model, processor, tokenizer[, adapter])")
    return ModelSession.from_objects(*parts)


def _check_pairs(pairs: Sequence[TrainPair]) -> None:
    if not pairs:
        raise DataError("nothing to train on", [Problem(
            "the training set is empty", key_path="data",
            hint="check that the data folder holds ft_Data (and ft_Extra) with non-empty metadata", code="SK620")])


def lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at step s: linear warm-up, then cosine to ``min_lr_ratio``."""
    warm = max(0, min(config.warmup_steps, total_steps - 1))
    floor = config.min_lr_ratio

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        span = max(1, total_steps - warm - 1)
        progress = min(1.0, (step - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _approx_lengths(tokenizer: Any, pairs: Sequence[TrainPair], image_tokens: int) -> list[int]:
    texts = [p.prompt + " " + p.answer for p in pairs]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(x) + (image_tokens if p.image is not None else 0) for x, p in zip(ids, pairs)]


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, lengths: Optional[Sequence[int]] = None,
                  window: int = 0) -> list[list[int]]:
    """One epoch of index batches: a seeded permutation, optionally length-grouped.

    With ``window`` > 0 the permutation is cut into windows of ``window * batch_size`` indices,
    each sorted by length and cut into batches (less padding), and the batch order is shuffled
    again, so an epoch still visits every pair exactly once in a random order.
    """
    perm = torch.randperm(n, generator=generator).tolist()
    if not window or lengths is None:
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    size = window * batch_size
    batches: list[list[int]] = []
    for w in range(0, n, size):
        chunk = sorted(perm[w:w + size], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def jitter_image(image: Any, strength: float, generator: torch.Generator) -> Any:
    """A mild random variant of a PIL image: edge-padded shift, colour gain and Gaussian noise."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = arr.shape[:2]
    pad = max(1, round(0.06 * min(h, w)))
    r = torch.rand(6, generator=generator).tolist()
    dx, dy = int(r[0] * (2 * pad + 1)) - pad, int(r[1] * (2 * pad + 1)) - pad
    padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    arr = padded[pad - dy:pad - dy + h, pad - dx:pad - dx + w]
    gain = 1.0 + strength * (2.0 * np.array(r[2:5], dtype=np.float32) - 1.0)
    noise = torch.randn(arr.shape, generator=generator).numpy() * (255.0 * strength * 0.3)
    arr = arr * gain + (r[5] * 2.0 - 1.0) * 255.0 * strength * 0.5 + noise
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _image_token_count(session: Any, pairs: Sequence[TrainPair]) -> int:
    img = next((p.image for p in pairs if p.image is not None), None)
    if img is None:
        return 0
    with_img = session.encode(["x"], [img]).inputs["attention_mask"].sum()
    without = session.encode(["x"], [None]).inputs["attention_mask"].sum()
    return int(with_img - without)


# Families whose forward is ``lm_head(model(...)[0])`` with a plain shifted cross-entropy (no logit
# soft-capping or scaling): for them the loss is computed on the answer positions only, which skips
# the vocabulary projection of every prompt token (~15 % of a small model's training FLOPs).
_PLAIN_HEAD = frozenset({"LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration",
                         "Qwen2_5_VLForConditionalGeneration", "Qwen2VLForConditionalGeneration",
                         "LlamaForCausalLM", "Qwen2ForCausalLM"})


def answer_losses(model: Any, inputs: dict[str, torch.Tensor],
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy of all answer tokens, detached mean per row).

    The first equals ``model(**inputs, labels=labels).loss``; rows without answer tokens get 0.
    """
    target = labels[:, 1:]
    keep = target != -100
    if type(model).__name__ in _PLAIN_HEAD and model.get_output_embeddings() is not None:
        hidden = model.model(**inputs, use_cache=False)[0]
        logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    else:
        logits = model(**inputs, use_cache=False).logits[:, :-1][keep]
    nll = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="none")
    rows = keep.nonzero()[:, 0]
    per_row = torch.zeros(labels.shape[0], device=nll.device).index_add_(0, rows, nll.detach())
    per_row = per_row / keep.sum(dim=1).clamp(min=1)
    return nll.mean(), per_row


def answer_loss(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (labels != -100), equal to ``model(..., labels=).loss``."""
    return answer_losses(model, inputs, labels)[0]


def focus_order(n: int, batch_size: int, generator: torch.Generator, last_loss: torch.Tensor, threshold: float,
                revisit: float, lengths: Optional[Sequence[int]] = None, window: int = 0) -> list[list[int]]:
    """One pass of batches that skips most pairs already learned (last loss below ``threshold``).

    Each learned pair is kept with probability ``revisit``, so it is still rehearsed now and then;
    every other pair is visited once. Deterministic for the generator state.
    """
    keep_learned = torch.rand(n, generator=generator) < revisit
    chosen = ((last_loss >= threshold) | keep_learned).nonzero()[:, 0].tolist()
    if not chosen:
        chosen = list(range(n))
    sub_lengths = [lengths[i] for i in chosen] if lengths is not None else None
    return [[chosen[j] for j in b] for b in epoch_batches(len(chosen), batch_size, generator, sub_lengths, window)]


def train_vanilla(session_or_parts: Any, pairs: Sequence[TrainPair], config: TrainConfig = TrainConfig(),
                  progress: bool = True, *, on_epoch: Optional[Callable[[int, float], None]] = None) -> TrainReport:
    """Fine-tune in place on ``pairs`` with answer-only loss; the model is left in eval mode.

    Args:
        session_or_parts: a :class:`~steerkit.session.ModelSession`, or ``(model, processor,
            tokenizer[, adapter])``.
        pairs: training pairs (e.g. :func:`steerkit.data.mllmu.train_pairs` of a dataset root).
        config: hyper-parameters; ``epochs`` may be fractional.
        progress: show a tqdm bar with the running loss on stderr.
        on_epoch: called as ``on_epoch(epoch_index, mean_loss)`` after each full epoch.
    """
    from tqdm.auto import tqdm

    _check_pairs(pairs)
    session = _as_session(session_or_parts)
    model = session.model
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        aug_gen = torch.Generator().manual_seed(config.seed + 1)
        base = list(pairs)
        n = len(base)
        per_epoch = math.ceil(n / config.batch_size)
        total = max(1, int(round(config.epochs * per_epoch)))
        steps = min(total, config.max_steps) if config.max_steps else total
        lengths = None
        if config.length_grouping:
            lengths = _approx_lengths(session.tokenizer, base, _image_token_count(session, base))
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config, total))
        model.train()
        losses: list[float] = []
        epoch_losses: list[float] = []
        t0 = time.perf_counter()
        bar = tqdm(total=steps, disable=not progress, file=sys.stderr, desc="vanilla fine-tune", unit="step",
                   dynamic_ncols=True, leave=False)
        step, epoch, ema = 0, 0, None
        last_loss = torch.full((n,), float("inf"))
        try:
            while step < steps:
                if config.focus_threshold > 0:
                    order = focus_order(n, config.batch_size, gen, last_loss, config.focus_threshold,
                                        config.focus_revisit, lengths, config.length_grouping)
                else:
                    order = epoch_batches(n, config.batch_size, gen, lengths, config.length_grouping)
                for idx in order:
                    if step >= steps:
                        break
                    batch = [base[i] for i in idx]
                    images = [p.image for p in batch]
                    if config.image_jitter:
                        images = [None if im is None else jitter_image(im, config.image_jitter, aug_gen)
                                  for im in images]
                    enc = session.encode([p.prompt for p in batch], images, [p.answer for p in batch],
                                         padding_side="right")
                    loss, per_row = answer_losses(model, enc.inputs, enc.labels.to(session.device))
                    last_loss[idx] = per_row.cpu()  # the focus bookkeeping stays on the CPU
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    opt.step()
                    sched.step()
                    value = float(loss.detach())
                    losses.append(value)
                    step += 1
                    ema = value if ema is None else 0.95 * ema + 0.05 * value
                    bar.update(1)
                    if step % 10 == 0 or step == steps:
                        bar.set_postfix(loss=f"{ema:.4f}", epoch=f"{step / per_epoch:.1f}")
                    if step % per_epoch == 0:
                        epoch_losses.append(sum(losses[-per_epoch:]) / per_epoch)
                        if on_epoch is not None:
                            on_epoch(epoch, epoch_losses[-1])
                            model.train()
                        epoch += 1
        finally:
            bar.close()
            model.eval()
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)
    tail = losses[-min(len(losses), per_epoch if len(losses) >= per_epoch else 50):]
    return TrainReport(steps=step, epochs=step / per_epoch, pairs=len(base), wall_s=wall,
                       final_loss=sum(tail) / len(tail), epoch_losses=epoch_losses, first_loss=losses[0],
                       config=config.to_dict())

