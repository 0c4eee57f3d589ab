"""steerkit train: the vanilla fine-tune on an MLLMU-layout dataset, or the cached embedded default."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

from .common import guarded

_ARCHS = ("llava", "qwen2_5_vl")
#: --model fine-tunes pretrained weights: a far smaller learning rate and few epochs (MLLMU-Bench's
#: vanilla setting) than training a small model from scratch.
PRETRAINED_FINETUNE = dict(epochs=3.0, batch_size=8, lr=2e-5, warmup_steps=40)


def _problem(summary: str, message: str, hint: str, key: str, code: str = "SK720", path: str | None = None):
    from ..errors import DataError, Problem

    return DataError(summary, [Problem(message, path=path, key_path=key, hint=hint, code=code)])


def _data_configs(data: Path) -> tuple[str, ...]:
    """ft_Data and ft_Extra when present (the released benchmark has only ft_Data)."""
    if not data.exists():
        raise _problem(f"data folder not found: {data}", f"'{data}' does not exist",
                       "pass --data the root of an MLLMU-Bench-layout dataset (the folder holding ft_Data/)",
                       "--data", path=str(data))
    if not data.is_dir():
        raise _problem(f"not a folder: {data}", f"'{data}' is a file", "pass --data a dataset folder", "--data",
                       path=str(data))
    if any(data.glob("*.parquet")):  # a config folder itself
        return ()
    present = tuple(c for c in ("ft_Data", "ft_Extra") if (data / c).is_dir())
    if not present:
        raise _problem(f"no training data in {data}", "the folder holds neither ft_Data/ nor ft_Extra/",
                       "pass the dataset root (MLLMU-Bench layout: ft_Data/*.parquet with a 'metadata' column), "
                       "or a config folder of parquet files", "--data", code="SK601", path=str(data))
    return present


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise _problem(f"output folder is not empty: {out}", f"'{out}' already exists",
                       "choose a new --out folder, or pass --overwrite to replace it", "--out", path=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


@click.command("train")
@click.option("--data", type=click.Path(path_type=Path), help="MLLMU-Bench-layout dataset root (ft_Data/, ft_Extra/).")
@click.option("--arch", type=click.Choice(_ARCHS), help="Train a small model of this architecture from scratch.")
@click.option("--model", "model_id", help="Fine-tune this Hub id or local checkpoint instead of a small model.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Checkpoint folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True),
              help="Epochs (default: the embedded recipe of --arch, 3 with --model).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Init and shuffling seed.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (default: the embedded recipe of --arch, 2e-5 with --model).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Batch size (default: the embedded recipe of --arch, 8 with --model).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--size", default="default", show_default=True, help="Small-model size preset (with --arch).")
@click.option("--embedded", type=click.Choice(_ARCHS),
              help="Just make sure the cached embedded default is trained; print its folder.")
@click.option("--world-seed", type=click.IntRange(min=0), default=0, show_default=True, help="With --embedded.")
@click.option("--n-profiles", type=click.IntRange(min=8), default=100, show_default=True, help="With --embedded.")
@click.option("--retrain", is_flag=True,
              help="With --embedded: train into the cache even when steerkit ships this checkpoint.")
@click.option("--device", default="cpu", show_default=True,
              help="With --embedded --retrain: where to train (cpu or cuda; part of the cache key).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@guarded
def command(data, arch, model_id, out, overwrite, epochs, seed, lr, batch_size, max_steps, size, embedded,
            world_seed, n_profiles, retrain, device, quiet):
    """Vanilla fine-tune on MLLMU-Bench-layout data (the step before unlearning).

    Trains on every pair of ft_Data/ (and ft_Extra/ when present) with the loss on the answer only,
    AdamW with warm-up and cosine decay, and writes a checkpoint that every steerkit command loads
    (model.id: OUT). --embedded prints the folder of the model 'embedded:NAME' names: the checkpoint
    shipped with steerkit (world seed 0), else the cache, trained there when missing; --retrain trains
    a sibling into the cache with the same pinned config (see docs: reproducibility).

    \b
    Examples:
      steerkit train --embedded llava
      steerkit train --embedded llava --retrain --device cuda
      steerkit train --data ~/MLLMU-Bench --arch llava --out runs/my_llava --epochs 20
      steerkit train --data ~/MLLMU-Bench --model ./my-vlm --out runs/my_vlm_ft --epochs 3 --lr 2e-5
    """
    from dataclasses import replace

    from ..models.embedded import default_train_config, ensure_embedded

    if embedded:
        if data or arch or model_id or out:
            raise _problem("--embedded takes no --data, --arch, --model or --out",
                           "--embedded was combined with options for training on your own data",
                           "run 'steerkit train --embedded llava' on its own", "--embedded")
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise _problem(f"unknown --device '{device}'", "expected cpu, cuda or cuda:N", "e.g. --device cuda",
                           "--device")
        path = ensure_embedded(embedded, world_seed=world_seed, n_profiles=n_profiles, progress=not quiet,
                               device=device, shipped=not retrain)
        click.echo(str(path))
        return
    if data is None or out is None:
        raise _problem("missing --data or --out", "training on your own data needs --data DIR and --out DIR",
                       "e.g. steerkit train --data ~/MLLMU-Bench --arch llava --out runs/my_llava "
                       "(or steerkit train --embedded llava)", "--data" if data is None else "--out")
    if (arch is None) == (model_id is None):
        raise _problem("give exactly one of --arch or --model", "no model to train" if arch is None else
                       "both --arch and --model given",
                       "--arch llava trains a small model from scratch; --model DIR fine-tunes a checkpoint",
                       "--arch")
    from ..train.vanilla import TrainConfig

    configs = _data_configs(data)
    # --arch trains a small model from scratch with the recipe of embedded:ARCH; --model fine-tunes.
    cfg = (replace(default_train_config(arch), seed=seed) if arch
           else TrainConfig(seed=seed, **PRETRAINED_FINETUNE))
    cfg = replace(cfg, **{k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size,
                                                max_steps=max_steps).items() if v is not None})
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))  # noqa: E731
    tmp = _prepare_out(out, overwrite)
    try:
        report, meta = _train(data, configs, arch, model_id, size, cfg, tmp, log, not quiet)
        (tmp / "steerkit_train.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"trained {report.steps} steps in {report.wall_s:.0f} s, final loss {report.final_loss:.4f}")
    click.echo(str(out))


def _train(data, configs, arch, model_id, size, cfg, tmp, log, progress):
    from ..data.mllmu import train_pairs
    from ..models.processors import save_processor
    from ..session import ModelSession
    from ..train.vanilla import train_vanilla

    pairs = train_pairs(data, configs) if configs else train_pairs(data)
    log(f"{len(pairs)} training pairs from {data}")
    if arch is not None:
        from ..models.small import SIZES, build_small, parameter_counts, train_tokenizer, world_texts

        if size not in SIZES:
            raise _problem(f"unknown size '{size}'", f"no size preset '{size}'",
                           f"use one of: {', '.join(SIZES)}", "--size")
        tok = train_tokenizer(world_texts(pairs), SIZES[size].vocab_size, arch=arch)
        model, processor = build_small(arch, tok, seed=cfg.seed, size=size)
        session = ModelSession.from_objects(model, processor, tok)
        source = {"arch": arch, "size": SIZES[size].to_dict(), "parameters": parameter_counts(model)}
    else:
        from ..models.loading import load_pretrained

        model, processor, tok = load_pretrained(model_id, loader=None)
        session = ModelSession.from_objects(model, processor, tok)
        source = {"model": model_id}
    report = train_vanilla(session, pairs, cfg, progress=progress)
    session.model.save_pretrained(tmp)
    save_processor(session.processor if session.processor is not None else session.tokenizer, tmp)
    meta = {"data": str(data), "configs": list(configs), **source, "train_report": report.to_dict()}
    return report, meta
