"""Run a training-based unlearning baseline: load vanilla, train, merge, save atomically, evaluate.

Why it looks like this: the baselines exist to be compared with steering, so everything but the
weight update is shared with the steering path. The vanilla model is loaded by
:func:`steerkit.session.load_session` from the same ``model`` section a recipe has; training pairs
are the ``ft_Data`` QA pairs (answer-only labels from :meth:`ModelSession.encode`, the encoding
evaluation uses) split by profile ID into forget (``forget_N``) and retain (``retain_(100-N)``);
the unlearned model is scored by :func:`steerkit.evaluate.evaluate` on the items
:func:`steerkit.eval_job.eval_items_for` gives a recipe with the same ``eval`` section.

The reference model of NPO and KL_Min is the vanilla model itself: with LoRA, the same weights with
the adapters switched off (no copy); NPO's reference NLLs are computed once, before the first step
(N_forget forward passes); KL_Min needs reference logits on every retain batch (with full
fine-tuning that means a frozen copy of the model). The lr schedule and batch order reuse
:mod:`steerkit.train.vanilla` (warm-up + cosine, seeded permutations); the default schedule is a
constant lr, so the first k steps of a run are exactly a k-step run (the sweep relies on this).

Costs are counted in "example passes": one forward (or backward) of one example; a step over a
batch of 8 forget and 8 retain examples is 16 forward and 16 backward passes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch

from ..data.items import TrainPair
from ..errors import DataError, Problem
from . import losses as L
from .config import LoadedUnlearnConfig, UnlearnConfig, UnlearnConfigError, load_unlearn_config
from .memory import MemoryMeter

META_FILE = "steerkit_unlearn.json"
REPORT_FILE = "unlearn_report.json"


@dataclass
class TrainStats:
    """What the training phase did and cost."""

    method: str
    mode: str
    steps: int
    epochs: float  # passes over the forget set
    forget_pairs: int
    retain_pairs: int
    train_seconds: float  # reference pre-pass + optimisation + LoRA merge; no loading, saving or eval
    forward_passes: int  # example forwards with gradient (training)
    backward_passes: int  # example backwards
    reference_forward_passes: int  # example forwards of the frozen reference (no gradient)
    trainable_params: int
    total_params: int
    changed_params: int = 0  # weights whose value differs from vanilla after the merge
    changed_tensors: int = 0
    first_losses: dict[str, float] = field(default_factory=dict)
    final_losses: dict[str, float] = field(default_factory=dict)  # mean over the last 10 steps
    memory: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # per step


@dataclass
class UnlearnReport:
    """Everything a run produced: costs, losses, where the checkpoint is, and the evaluation."""

    name: str
    model_id: str
    train: TrainStats
    load_seconds: float
    save_seconds: float
    eval_seconds: float
    checkpoint: Optional[str]
    out_dir: str
    metrics: dict = field(default_factory=dict)  # unlearned model, {split: {task: {modality: {...}}}}
    vanilla_metrics: dict = field(default_factory=dict)
    eval_paths: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def accuracy(self, split: str, task: str = "classification", modality: str = "vqa",
                 vanilla: bool = False) -> Optional[float]:
        cell = (self.vanilla_metrics if vanilla else self.metrics).get(split, {}).get(task, {}).get(modality)
        return None if cell is None else cell.get("accuracy")


# ----------------------------------------------------------------------------------------- data
def data_root(loaded: LoadedUnlearnConfig) -> Path:
    """The MLLMU-layout folder training and evaluation read (the embedded world when data.path is null)."""
    from ..sources import world_root

    cfg = loaded.config
    return loaded.resolve(cfg.data.path) if cfg.data.path else world_root(cfg.model.world)


def split_pairs(loaded: LoadedUnlearnConfig) -> tuple[list[TrainPair], list[TrainPair]]:
    """(forget, retain) training pairs: ``data.train_configs`` split by the IDs of forget_N / retain_(100-N)."""
    from ..data.mllmu import profile_ids, train_pairs

    cfg = loaded.config
    n = cfg.data.forget_ratio
    root = data_root(loaded)
    pooled: Optional[list[TrainPair]] = None
    if cfg.data.forget_dir is None or (cfg.uses_retain and cfg.data.retain_dir is None):
        pooled = train_pairs(root, configs=tuple(cfg.data.train_configs))

    def pick(folder: Optional[str], config: str) -> list[TrainPair]:
        if folder is not None:
            return train_pairs(loaded.resolve(folder))
        ids = set(profile_ids(root, config))
        return [p for p in pooled or [] if p.id in ids]

    forget = pick(cfg.data.forget_dir, f"forget_{n}")
    retain = pick(cfg.data.retain_dir, f"retain_{100 - n}") if cfg.uses_retain else []
    if cfg.data.retain_limit and len(retain) > cfg.data.retain_limit:
        gen = torch.Generator().manual_seed(cfg.seed)
        keep = sorted(torch.randperm(len(retain), generator=gen)[: cfg.data.retain_limit].tolist())
        retain = [retain[i] for i in keep]
    empty = [(name, key) for name, key, pairs in (("forget", "forget_dir", forget), ("retain", "retain_dir", retain))
             if not pairs and (name == "forget" or cfg.uses_retain)]
    if empty:
        raise DataError("no training pairs to unlearn with", [Problem(
            f"the {name} set is empty", str(root), key_path=f"data.{key}", code="SK811",
            hint="the training pairs carry no profile IDs matching forget_N / retain_(100-N) (the released "
                 "ft_Data has no ID column): point data.forget_dir / data.retain_dir at MLLMU's "
                 "baseline_train_split/forget_N and retain_(100-N)") for name, key in empty])
    return forget, retain


# ----------------------------------------------------------------------------------------- model set-up
def decoder_layer_paths(session) -> list[str]:
    """Module paths of the language model's decoder layers (from the adapter's resid_pre site)."""
    _, n_layers = session.dims
    return [session.adapter.module_path("resid_pre", layer) for layer in range(n_layers)]


def lora_targets(session, target_modules: Union[str, Sequence[str]]) -> list[str]:
    """Full names of the nn.Linear modules LoRA adapts: inside decoder layers, matching by last name."""
    prefixes = tuple(p + "." for p in decoder_layer_paths(session))
    linear = [n for n, m in session.model.named_modules()
              if isinstance(m, torch.nn.Linear) and n.startswith(prefixes)]
    if target_modules == "all_linear":
        chosen = linear
    else:
        wanted = set(target_modules)
        chosen = [n for n in linear if n.rsplit(".", 1)[-1] in wanted]
    if not chosen:
        names = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise UnlearnConfigError("no LoRA target in the language model", [Problem(
            f"none of {list(target_modules)} is a linear layer of the decoder layers", key_path="lora.target_modules",
            hint=f"linear layers there: {', '.join(names) or 'none'}; or use 'all_linear'", code="SK812")])
    return chosen


def _full_params(session, scope: str) -> list[tuple[str, torch.nn.Parameter]]:
    params = list(session.model.named_parameters())
    if scope == "all":
        return params
    prefixes = tuple(p + "." for p in decoder_layer_paths(session))
    return [(n, p) for n, p in params if n.startswith(prefixes)]


class _Reference:
    """Forward passes of the vanilla model: LoRA with adapters off, or a frozen full copy."""

    def __init__(self, model: torch.nn.Module, peft_model: Any = None, frozen: Optional[torch.nn.Module] = None):
        self.model, self.peft_model, self.frozen = model, peft_model, frozen

    @torch.no_grad()
    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.frozen is not None:
            return self.frozen(**inputs).logits
        was_training = self.model.training
        self.model.eval()
        try:
            if self.peft_model is not None:
                with self.peft_model.disable_adapter():
                    return self.model(**inputs).logits
            return self.model(**inputs).logits
        finally:
            self.model.train(was_training)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[list[int]]:
    from ..train.vanilla import epoch_batches

    while True:
        yield from epoch_batches(n, batch_size, gen)


def _encode(session, pairs: Sequence[TrainPair]):
    return session.encode([p.prompt for p in pairs], [p.image for p in pairs], [p.answer for p in pairs],
                          padding_side="right")


def _reference_nll(session, ref: _Reference, pairs: Sequence[TrainPair], batch_size: int,
                   reduction: str) -> torch.Tensor:
    out = []
    for s in range(0, len(pairs), batch_size):
        enc = _encode(session, pairs[s:s + batch_size])
        out.append(L.answer_nll(ref.logits(enc.inputs), enc.labels, reduction).detach())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------- training
StepCallback = Callable[[int, Any], None]


def unlearn_session(session, forget: Sequence[TrainPair], retain: Sequence[TrainPair], config: UnlearnConfig,
                    progress: bool = True, on_step: Optional[StepCallback] = None,
                    callback_steps: Sequence[int] = ()) -> TrainStats:
    """Unlearn ``forget`` in place on ``session.model``; LoRA is merged and the model left in eval mode.

    ``on_step(step, session)`` is called after each step listed in ``callback_steps`` (model in eval
    mode; its time is not counted in ``train_seconds``). ``session.model`` is the same object before
    and after: LoRA layers are injected in place and merged back (a run stopped by an exception
    removes them unmerged, leaving the vanilla weights). Parameters are left frozen.
    """
    from tqdm.auto import tqdm

    from ..train.vanilla import lr_lambda

    tr = config.train
    if not forget:
        raise DataError("nothing to unlearn", [Problem("the forget set is empty", code="SK811")])
    if config.uses_retain and not retain:
        raise DataError("no retain pairs", [Problem(f"{config.method} needs retain pairs", code="SK811")])
    model = session.model
    old_threads = torch.get_num_threads()
    if tr.threads:
        torch.set_num_threads(tr.threads)
    meter = MemoryMeter()
    meter.start()
    t0 = time.perf_counter()
    paused = 0.0
    try:
        torch.manual_seed(config.seed)
        total_params = sum(p.numel() for p in model.parameters())
        ref_passes = 0
        reduction = tr.npo_reduction if config.method == "npo" else "mean"
        ref_nll = None
        if config.method == "npo":  # before any update: the vanilla model is the reference
            model.eval()
            ref_nll = _reference_nll(session, _Reference(model), forget, tr.batch_size, reduction)
            ref_passes += len(forget)
        peft_model, frozen = None, None
        if config.mode == "lora":
            from peft import LoraConfig, get_peft_model

            targets = lora_targets(session, config.lora.target_modules)
            modules = dict(model.named_modules())
            snapshot = {n + ".weight": modules[n].weight.detach().clone() for n in targets}
            for p in model.parameters():
                p.requires_grad_(False)
            lcfg = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=targets, bias="none")
            peft_model = get_peft_model(model, lcfg)
            trainable = [p for p in model.parameters() if p.requires_grad]
        else:
            chosen = _full_params(session, config.full.scope)
            names = {n for n, _ in chosen}
            for n, p in model.named_parameters():
                p.requires_grad_(n in names)
            if config.method == "kl_min":
                frozen = copy.deepcopy(model).eval().requires_grad_(False)
            snapshot = {n: p.detach().clone() for n, p in chosen}
            trainable = [p for _, p in chosen]
        ref = _Reference(model, peft_model, frozen)
        n_trainable = sum(p.numel() for p in trainable)
        per_epoch = math.ceil(len(forget) / tr.batch_size)
        steps = tr.steps or max(1, math.ceil(tr.epochs * per_epoch))
        decay = [p for p in trainable if p.dim() >= 2]
        no_decay = [p for p in trainable if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": tr.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=tr.lr, betas=tuple(tr.betas))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tr, steps))
        gen = torch.Generator().manual_seed(config.seed)
        f_iter = _batches(len(forget), tr.batch_size, gen)
        r_iter = _batches(len(retain), tr.retain_batch_size or tr.batch_size,
                          torch.Generator().manual_seed(config.seed + 1)) if config.uses_retain else None
        fwd = bwd = 0
        history: list[dict[str, float]] = []
        wanted = set(callback_steps)
        model.train()
        bar = tqdm(total=steps, disable=not progress, file=sys.stderr, desc=f"unlearn {config.method}",
                   unit="step", dynamic_ncols=True, leave=False)
        try:
            for step in range(1, steps + 1):
                idx = next(f_iter)
                enc_f = _encode(session, [forget[i] for i in idx])
                nll_f = L.answer_nll(model(**enc_f.inputs).logits, enc_f.labels, reduction)
                examples = len(idx)
                parts: dict[str, float] = {}
                if config.method == "npo":
                    loss = L.npo_loss(nll_f, ref_nll[idx], tr.beta)
                    parts["forget_nll_minus_ref"] = float((nll_f.detach() - ref_nll[idx]).mean())
                    per_tok = nll_f / L.answer_token_counts(enc_f.labels) if reduction == "sum" else nll_f
                    parts["forget_nll"] = float(per_tok.detach().mean())
                else:
                    parts["forget_nll"] = float(nll_f.detach().mean())
                    loss = L.ga_loss(nll_f)
                if config.uses_retain:
                    ridx = next(r_iter)
                    enc_r = _encode(session, [retain[i] for i in ridx])
                    logits_r = model(**enc_r.inputs).logits
                    examples += len(ridx)
                    if config.method == "ga_diff":
                        nll_r = L.answer_nll(logits_r, enc_r.labels)
                        loss = L.ga_diff_loss(nll_f, nll_r, tr.retain_weight)
                        parts["retain_nll"] = float(nll_r.detach().mean())
                    else:
                        kl = L.answer_kl(logits_r, ref.logits(enc_r.inputs), enc_r.labels)
                        ref_passes += len(ridx)
                        loss = L.kl_min_loss(nll_f, kl, tr.retain_weight)
                        parts["retain_kl"] = float(kl.detach().mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                fwd += examples
                bwd += examples
                if tr.grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, tr.grad_clip)
                opt.step()
                sched.step()
                parts["loss"] = float(loss.detach())
                parts["seconds"] = time.perf_counter() - t0 - paused
                history.append({"step": step, **parts})
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.3f}", f_nll=f"{parts['forget_nll']:.2f}")
                if on_step is not None and step in wanted:
                    t_pause = time.perf_counter()
                    model.eval()
                    with torch.no_grad():
                        on_step(step, session)
                    model.train()
                    paused += time.perf_counter() - t_pause
        except BaseException:
            if peft_model is not None:  # stopped mid-run: drop the adapters, leave the vanilla weights
                session.model = peft_model.unload()
            raise
        finally:
            bar.close()
            model.eval()
        if peft_model is not None:
            model = peft_model.merge_and_unload()  # the same object, LoRA layers folded back into Linear
            session.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        train_seconds = time.perf_counter() - t0 - paused
    finally:
        torch.set_num_threads(old_threads)
        memory = meter.stop()
    params = dict(model.named_parameters())
    changed = [int((params[n].detach() != v).sum()) for n, v in snapshot.items() if n in params]
    keys = [k for k in history[0] if k not in ("step", "seconds")]
    tail = history[-min(10, len(history)):]
    return TrainStats(
        method=config.method, mode=config.mode, steps=len(history), epochs=len(history) / per_epoch,
        forget_pairs=len(forget), retain_pairs=len(retain), train_seconds=train_seconds, forward_passes=fwd,
        backward_passes=bwd, reference_forward_passes=ref_passes, trainable_params=n_trainable,
        total_params=total_params, changed_params=sum(changed), changed_tensors=sum(c > 0 for c in changed),
        first_losses={k: history[0][k] for k in keys},
        final_losses={k: sum(h[k] for h in tail) / len(tail) for k in keys}, memory=memory, history=history)


# ----------------------------------------------------------------------------------------- saving
def save_checkpoint(session, out_dir: Union[str, os.PathLike], meta: Optional[dict[str, Any]] = None) -> Path:
    """Write model + tokenizer + image processor to ``out_dir`` atomically.

    Built in a hidden sibling (``.NAME.tmp-PID``) and renamed into place; ``META_FILE`` is written
    last. An interrupted save (error, Ctrl-C) removes the temporary folder and leaves any previous
    checkpoint untouched, so ``out_dir`` is either absent, the old checkpoint, or the complete new one.
    """
    from ..models.processors import save_processor

    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    tmp.mkdir()
    try:
        session.model.save_pretrained(tmp)
        save_processor(session.processor if session.processor is not None else session.tokenizer, tmp)
        (tmp / META_FILE).write_text(json.dumps(meta or {}, indent=2, default=str) + "\n", encoding="utf-8")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------- evaluation
def eval_items(loaded: LoadedUnlearnConfig, splits: Optional[Sequence[str]] = None,
               tasks: Optional[Sequence[str]] = None, limit: Optional[int] = None) -> list:
    """The items :func:`steerkit.eval_job.eval_items_for` gives a recipe with this config's eval section
    (refusal added when the data has a Refusal_Set, as ``steerkit eval`` does)."""
    from ..eval_job import eval_items_for
    from ..recipe import EvalSpec

    cfg = loaded.config
    ev = cfg.eval
    chosen = list(splits or ev.splits)
    if splits is None and (data_root(loaded) / "Refusal_Set").is_dir():
        chosen = list(dict.fromkeys(chosen + ["refusal"]))
    spec = EvalSpec(splits=chosen, tasks=list(tasks or ev.tasks), modalities=ev.modalities,
                    forget_ratio=cfg.data.forget_ratio, data=cfg.data.path, batch_size=ev.batch_size,
                    limit=limit if limit is not None else ev.limit)
    shim = SimpleNamespace(recipe=SimpleNamespace(eval=spec, model=cfg.model, seed=cfg.seed),
                           resolve=loaded.resolve)  # the three attributes eval_items_for reads
    return eval_items_for(shim, chosen)


def _evaluate(session, items, batch_size: int, progress: bool):
    from ..eval_job import make_fns
    from ..evaluate import evaluate

    gen, _ = make_fns(session)
    return evaluate(items, gen, batch_size=batch_size, progress=progress)


# ----------------------------------------------------------------------------------------- the job
def _as_loaded(config: Any) -> LoadedUnlearnConfig:
    if isinstance(config, LoadedUnlearnConfig):
        return config
    if isinstance(config, UnlearnConfig):
        return LoadedUnlearnConfig(config, None)
    return load_unlearn_config(config)


def run_unlearning(config: Any, progress: bool = True, *, out_dir: Optional[Union[str, Path]] = None,
                   session: Any = None, log: Optional[Callable[[str], None]] = None) -> UnlearnReport:
    """Train the baseline a config describes, save the unlearned checkpoint, evaluate it.

    Args:
        config: a config path, :class:`LoadedUnlearnConfig` or :class:`UnlearnConfig`.
        progress: tqdm bars (training, evaluation) on stderr.
        out_dir: overrides ``config.out``; gets ``checkpoint/``, ``eval/`` and ``unlearn_report.json``.
        session: an already loaded vanilla :class:`~steerkit.session.ModelSession` (it is modified).
        log: where one-line progress messages go (default: stderr when ``progress``).
    """
    from ..evaluate import write_report
    from ..evaluate.report import atomic_write_text
    from ..session import load_session

    loaded = _as_loaded(config)
    cfg = loaded.config
    say = log or ((lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None))
    out = Path(out_dir) if out_dir else loaded.out_dir
    forget, retain = split_pairs(loaded)
    t0 = time.perf_counter()
    if session is None:
        say(f"loading {cfg.model.id} (embedded models are trained once and cached)")
        session = load_session(cfg.model, loaded.base_dir)
    load_s = time.perf_counter() - t0
    items = eval_items(loaded) if cfg.eval.enabled else []
    results: dict[str, Any] = {}
    eval_s = 0.0
    if items and cfg.eval.vanilla:
        say(f"evaluating vanilla on {len(items)} items")
        t1 = time.perf_counter()
        results["vanilla"] = _evaluate(session, items, cfg.eval.batch_size, progress)
        eval_s += time.perf_counter() - t1
    say(f"{cfg.method} ({cfg.mode}) on {len(forget)} forget / {len(retain)} retain pairs")
    stats = unlearn_session(session, forget, retain, cfg, progress)
    say(f"trained {stats.steps} steps in {stats.train_seconds:.1f} s; final loss {stats.final_losses['loss']:.4f}")
    checkpoint, save_s = None, 0.0
    if cfg.save:
        t2 = time.perf_counter()
        meta = {"format": 1, "kind": "steerkit.unlearn", "vanilla_model_id": cfg.model.id, "config": cfg.dump(),
                "train": {k: v for k, v in asdict(stats).items() if k != "history"}}
        checkpoint = str(save_checkpoint(session, out / "checkpoint", meta))
        save_s = time.perf_counter() - t2
        say(f"saved the unlearned checkpoint to {checkpoint}")
    paths: dict[str, str] = {}
    if items:
        t3 = time.perf_counter()
        results[cfg.method] = _evaluate(session, items, cfg.eval.batch_size, progress)
        eval_s += time.perf_counter() - t3
        written = write_report(out / "eval", results, plots=cfg.eval.plots,
                               title=f"{cfg.name}: vanilla vs {cfg.method}")
        paths = {k: str(v) for k, v in written.items()}
    report = UnlearnReport(
        name=cfg.name, model_id=cfg.model.id, train=stats, load_seconds=load_s, save_seconds=save_s,
        eval_seconds=eval_s, checkpoint=checkpoint, out_dir=str(out),
        metrics=results[cfg.method].metrics if cfg.method in results else {},
        vanilla_metrics=results["vanilla"].metrics if "vanilla" in results else {}, eval_paths=paths,
        config=cfg.dump())
    paths["report"] = str(atomic_write_text(out / REPORT_FILE, json.dumps(report.to_dict(), indent=2) + "\n"))
    return report
