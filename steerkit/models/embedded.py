"""The embedded default models: small VLMs trained on the synthetic world, built once and cached.

Why: the whole MLLMEraser pipeline (vanilla fine-tune, extraction, gated steering, evaluation) must
run on a laptop with no downloads. ``embedded:llava`` / ``embedded:qwen2_5_vl`` name a small model
(:mod:`steerkit.models.small`) trained by :func:`steerkit.train.vanilla.train_vanilla` on the world
of :mod:`steerkit.bench.world`. The first use generates the world and trains (a few CPU minutes);
every later use loads the cached checkpoint through :func:`steerkit.models.loading.load_pretrained`,
exactly the path a user's Hub id or local checkpoint takes.

Cache layout (``$STEERKIT_HOME``, default ``~/.cache/steerkit``)::

    worlds/seed{S}-n{N}-{world key}/       the generated MLLMU-layout world
    models/{name}-w{S}-n{N}-{model key}/   save_pretrained checkpoint + steerkit_embedded.json
    locks/*.lock                           one file lock per world / model being built

The world key hashes the world generator's sources; the model key hashes the architecture, the
world key, the size config (:class:`~steerkit.models.small.SmallSize`), the training config and
:data:`RECIPE_VERSION`. Anything that would change the result changes the folder name, so a stale
checkpoint is never reused. Both are written atomically: built in a hidden temporary sibling, then
renamed into place under a file lock; a stopped run leaves only a temporary folder, removed by the
next build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import Problem, RecipeError, choices_hint
from .small import ARCHS, SmallSize, resolve_size

#: Bump when the way embedded models are built or trained changes (data, tokenizer, loop).
RECIPE_VERSION = "vanilla-v2"

#: Metadata file written next to the weights of every embedded checkpoint.
META_FILE = "steerkit_embedded.json"

EMBEDDED_NAMES = ARCHS


def default_train_config(name: str):
    """The training recipe of ``embedded:<name>`` (part of its cache key)."""
    from ..train.vanilla import TrainConfig

    # threads is pinned: torch's CPU kernels split reductions by thread count, so the same data and
    # seed trained with 1 or 2 threads give different weights (a sibling model 5 points apart). Two
    # threads reproduce on any machine (fewer cores only make it slower).
    # Qwen2.5-VL's vision tower (window attention, patch merger) learns faces more slowly: smaller
    # batches, a longer warm-up and image jitter brought its test (transformed portrait) accuracy to 94 %.
    # LLaVA gets the same image jitter (transformed portraits of the Test split were its weak point:
    # test VQA 86 without it) and more epochs to keep retain.
    return {"llava": TrainConfig(epochs=16.0, image_jitter=0.08, threads=2),
            "qwen2_5_vl": TrainConfig(epochs=14.0, batch_size=16, lr=2e-3, warmup_steps=100,
                                      image_jitter=0.08, threads=2)}[name]


def steerkit_home() -> Path:
    """Root of steerkit's cache: ``$STEERKIT_HOME``, else ``~/.cache/steerkit``."""
    env = os.environ.get("STEERKIT_HOME", "").strip()
    return Path(env).expanduser() if env else Path("~/.cache/steerkit").expanduser()


def _digest(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def world_key() -> str:
    """Hash of the world generator's code: a changed generator never reuses an old world."""
    import steerkit.bench as bench
    import steerkit.data.prompts as prompts

    h = hashlib.sha256()
    files = sorted(Path(bench.__file__).parent.glob("*.py")) + [Path(prompts.__file__)]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def _lock(name: str):
    from filelock import FileLock

    folder = steerkit_home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{name}.lock"))


def _clear_stale(final: Path) -> None:
    """Remove temporary siblings of ``final`` left by stopped builds (call with the lock held)."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _sigterm_unwinds():
    """Turn SIGTERM into SystemExit while a build runs: its default action ends the process without
    running ``finally``, which left an empty ``.tmp-PID`` folder in the cache (#18). Handlers can only be
    set from the main thread; elsewhere the next build's ``_clear_stale`` still removes the folder."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def shipped_world(seed: int = 0, n_profiles: int = 100) -> Optional[Path]:
    """The world shipped with steerkit for ``seed`` / ``n_profiles`` (the one the shipped models were
    trained on), or None. It is data, pinned: a change to the generator does not alter it (a test checks
    that the generator still reproduces it, so a drift is seen, not silently retrained)."""
    from ..resources import builtin_dir

    root = builtin_dir("checkpoints") / "worlds" / f"seed{seed}-n{n_profiles}"
    return root if (root / "world.json").is_file() else None


def world_dir(seed: int = 0, n_profiles: int = 100) -> Path:
    """Where :func:`ensure_world` finds the world of ``seed`` / ``n_profiles``: shipped, else the cache."""
    return shipped_world(seed, n_profiles) or generated_world_dir(seed, n_profiles)


def generated_world_dir(seed: int = 0, n_profiles: int = 100) -> Path:
    """Where a generated (not shipped) world is cached; its name carries the generator's code hash."""
    return steerkit_home() / "worlds" / f"seed{seed}-n{n_profiles}-{world_key()}"


def ensure_world(seed: int = 0, n_profiles: int = 100, progress: bool = False) -> Path:
    """Generate the synthetic world once (cached) and return its root folder."""
    from ..bench.world import generate_world

    root = world_dir(seed, n_profiles)
    if (root / "world.json").is_file():
        return root
    with _lock(root.name):
        if (root / "world.json").is_file():
            return root
        _log(progress, f"generating the synthetic world (seed {seed}, {n_profiles} profiles) in {root}")
        generate_world(root, seed=seed, n_profiles=n_profiles, overwrite=True)  # atomic rename inside
    return root


def _check_name(name: str) -> None:
    if name not in EMBEDDED_NAMES:
        raise RecipeError(f"no embedded model '{name}'", [Problem(
            f"unknown embedded model '{name}'", key_path="model.id",
            hint="use model.id embedded:<name>; " + choices_hint(name, EMBEDDED_NAMES),
            code="SK710")])


def model_key(name: str, world_seed: int, n_profiles: int, size: SmallSize, train: Any,
              device: str = "cpu") -> dict[str, Any]:
    """Everything the embedded checkpoint depends on (hashed into its folder name).

    The training device is part of it: CUDA and CPU kernels reduce in different orders, so the same
    data, seed and config give sibling models, never the same weights.
    """
    return {"name": name, "world_seed": world_seed, "n_profiles": n_profiles, "world_key": world_key(),
            "size": size.to_dict(), "train": train.to_dict(), "recipe_version": RECIPE_VERSION,
            "device": device_kind(device)}


def device_kind(device: Optional[str]) -> str:
    """'cpu' or 'cuda' (the index of a GPU does not change the weights)."""
    return "cpu" if not device else str(device).split(":")[0]


def embedded_dir(name: str, world_seed: int = 0, n_profiles: int = 100, *,
                 size: Union[str, SmallSize, dict] = "default", train: Any = None, device: str = "cpu") -> Path:
    """Where :func:`ensure_embedded` keeps (or will keep) this checkpoint in the cache."""
    _check_name(name)
    train = train or default_train_config(name)
    key = _digest(model_key(name, world_seed, n_profiles, resolve_size(size), train, device))
    return steerkit_home() / "models" / f"{name}-w{world_seed}-n{n_profiles}-{key}"


def shipped_embedded(name: str, world_seed: int = 0, n_profiles: int = 100, *,
                     size: Union[str, SmallSize, dict] = "default", train: Any = None) -> Optional[Path]:
    """The checkpoint shipped with steerkit for these settings, or None.

    Shipped checkpoints (``checkpoints/models/{name}-w{S}-n{N}/``) are what the README's figures come
    from. One is used when its recorded size, training config and recipe version equal the requested
    ones; where it was trained (device, versions) is in its ``steerkit_embedded.json``.
    """
    from ..resources import builtin_dir

    _check_name(name)
    folder = builtin_dir("checkpoints") / "models" / f"{name}-w{world_seed}-n{n_profiles}"
    meta = read_meta(folder)
    if not meta:
        return None
    want = model_key(name, world_seed, n_profiles, resolve_size(size), train or default_train_config(name))
    got = meta.get("key", {})
    same = all(got.get(k) == want[k] for k in ("name", "world_seed", "n_profiles", "size", "train",
                                                 "recipe_version"))
    return folder if same else None


def ensure_embedded(name: str, world_seed: int = 0, n_profiles: int = 100, progress: bool = True, *,
                    size: Union[str, SmallSize, dict] = "default", train: Any = None,
                    device: str = "cpu", shipped: bool = True) -> Path:
    """Return the checkpoint folder of ``embedded:<name>``, building and training it when missing.

    Args:
        name: ``"llava"`` or ``"qwen2_5_vl"``.
        world_seed, n_profiles: which synthetic world to train on (generated and cached as needed).
        progress: print what is happening and a training progress bar on stderr.
        size: a :data:`~steerkit.models.small.SIZES` preset name, overrides, or a SmallSize.
        train: a :class:`~steerkit.train.vanilla.TrainConfig` (default: :func:`default_train_config`).
        device: where to train when the checkpoint must be built ("cpu" or "cuda"); part of the key.
        shipped: use the checkpoint shipped with steerkit when one matches (False: the cache, trained
            on ``device`` when missing; ``steerkit train --embedded NAME --retrain``).

    The folder loads with ``steerkit.models.loading.load_pretrained(path, loader=None)``.
    """
    _check_name(name)
    sz = resolve_size(size)
    train = train or default_train_config(name)
    if shipped and (found := shipped_embedded(name, world_seed, n_profiles, size=sz, train=train)):
        return found
    final = embedded_dir(name, world_seed, n_profiles, size=sz, train=train, device=device)
    if (final / META_FILE).is_file():
        return final
    with _lock(final.name):
        if (final / META_FILE).is_file():
            return final
        _clear_stale(final)
        world = ensure_world(world_seed, n_profiles, progress=progress)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        with _sigterm_unwinds():
            try:
                tmp.mkdir(parents=True)
                _build(name, world, tmp, sz, train, model_key(name, world_seed, n_profiles, sz, train, device),
                       progress, device)
                if final.exists():  # a folder without metadata: an interrupted copy from an older layout
                    shutil.rmtree(final)
                tmp.rename(final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    _log(progress, f"embedded:{name} ready at {final}")
    return final


def _build(name: str, world: Path, out: Path, size: SmallSize, train: Any, key: dict[str, Any],
           progress: bool, device: str = "cpu") -> dict[str, Any]:
    import torch
    import transformers

    from ..data.mllmu import train_pairs
    from ..session import ModelSession
    from ..train.vanilla import train_vanilla
    from .processors import save_processor
    from .small import build_small, parameter_counts, train_tokenizer, world_texts

    t0 = time.perf_counter()
    pairs = train_pairs(world)
    tok = train_tokenizer(world_texts(pairs), size.vocab_size, arch=name)
    model, processor = build_small(name, tok, seed=train.seed, size=size)
    model.to(device)
    counts = parameter_counts(model)
    _log(progress, f"training embedded:{name} ({counts['total']:,} parameters) on {len(pairs)} pairs "
                   f"of {world} (a few minutes on CPU, once)")
    report = train_vanilla(ModelSession.from_objects(model, processor, tok), pairs, train, progress=progress)
    _log(progress, f"trained in {report.wall_s:.0f} s, {report.steps} steps, final loss {report.final_loss:.4f}")
    model.to("cpu").save_pretrained(out)
    save_processor(processor, out)
    meta = {"format": 1, "model_id": f"embedded:{name}", "architecture": type(model).__name__,
            "key": key, "parameters": counts, "world_root": str(world), "train_report": report.to_dict(),
            "build_seconds": time.perf_counter() - t0, "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": train.threads or torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if device_kind(device) == "cuda" else "cpu"}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")  # written last
    return meta


def read_meta(path: Union[str, Path]) -> Optional[dict[str, Any]]:
    """The ``steerkit_embedded.json`` of a checkpoint folder, or None."""
    f = Path(path) / META_FILE
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
