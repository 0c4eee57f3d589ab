"""Where pooled activations wait between the forward passes and the fits: in memory, or on disk.

Extraction reads every row at every steered layer in one pass per batch, but the fits use one layer at a
time. In memory, all layers of a collection are held together: rows x layers x d x 4 bytes (3.2 GiB for a
per-layer gate on LLaVA-1.5-7B, docs/memory.md). On disk, each batch is appended to one float32 file per
layer as soon as it is read, and a fit loads one layer back: the peak is rows x d x 4 bytes.

``ActivationStore`` chooses: ``memory``, ``disk``, or ``auto`` (disk once a collection would exceed
``budget_bytes``). The files live in a private temporary folder that is removed when the store closes,
also when extraction fails or is interrupted, so a rerun starts clean.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .errors import Problem, RecipeError

MODES = ("auto", "memory", "disk")
DEFAULT_BUDGET_BYTES = 1 << 30  # auto spills a collection larger than 1 GiB


def spill_error(where: Path, e: OSError) -> RecipeError:
    return RecipeError("cannot spill activations to disk", [Problem(
        f"{where}: {e.strerror or e}", str(where), None, None, "spill_dir",
        "pass --spill-dir to a writable folder with room for the activations (see docs/memory.md)", "SK761")])


class MemorySink:
    """Batches kept as tensors; finish() concatenates each layer."""

    def __init__(self, layers):
        self.chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def add(self, layer: int, rows: torch.Tensor) -> None:
        self.chunks[layer].append(rows)

    def finish(self, order: torch.Tensor) -> dict[int, torch.Tensor]:
        """``order[i]`` is the stored row that belongs at position i."""
        return {layer: torch.cat(parts)[order] for layer, parts in self.chunks.items()}


class DiskSink:
    """Batches appended to one raw float32 file per layer (row-major [rows, d])."""

    def __init__(self, folder: Path, name: str, layers):
        self.paths = {layer: folder / f"{name}.layer{layer}.f32" for layer in layers}
        self.files = {layer: open(path, "wb") for layer, path in self.paths.items()}
        self.rows = dict.fromkeys(self.paths, 0)
        self.width: Optional[int] = None

    def add(self, layer: int, rows: torch.Tensor) -> None:
        rows = rows.detach().to(torch.float32).contiguous()
        self.width = rows.shape[1]
        try:
            self.files[layer].write(rows.numpy().tobytes())
        except OSError as e:  # e.g. the disk is full
            raise spill_error(self.paths[layer].parent, e) from None
        self.rows[layer] += rows.shape[0]

    def finish(self, order: torch.Tensor) -> "DiskLayers":
        for f in self.files.values():
            f.close()
        return DiskLayers(self.paths, len(order), self.width or 0, order)


class DiskLayers(Mapping):
    """{layer: [N, d] float32}, read from disk one layer per lookup (the caller keeps what it needs)."""

    def __init__(self, paths: dict[int, Path], n: int, d: int, order: torch.Tensor):
        self.paths, self.n, self.d, self.order = paths, n, d, order.numpy()

    def __getitem__(self, layer: int) -> torch.Tensor:
        if self.n == 0:
            return torch.zeros(0, self.d)
        mapped = np.memmap(self.paths[layer], dtype=np.float32, mode="r", shape=(self.n, self.d))
        rows = torch.from_numpy(np.ascontiguousarray(mapped[self.order]))  # the one in-memory copy
        del mapped
        return rows

    def __iter__(self) -> Iterator[int]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


class ActivationStore:
    """Hands out a sink per collection and owns the spill folder (a context manager)."""

    def __init__(self, mode: str = "auto", *, spill_dir: Optional[str | os.PathLike] = None,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES):
        if mode not in MODES:
            raise RecipeError("invalid activation store", [Problem(
                f"activations must be one of {', '.join(MODES)}; got {mode!r}", None, None, None, "activations",
                "use --activations auto|memory|disk", "SK760")])
        self.mode, self.budget_bytes = mode, budget_bytes
        self.spill_dir = Path(spill_dir or os.environ.get("STEERKIT_SPILL_DIR") or tempfile.gettempdir())
        self.folder: Optional[Path] = None
        self._open: list[DiskSink] = []
        self.spilled: list[str] = []  # names of the collections written to disk (reported in the manifest)

    def sink(self, name: str, rows: int, layers, width: int):
        """A sink for ``rows`` rows of ``width`` floats at each of ``layers``."""
        layers = list(layers)
        needed = rows * len(layers) * width * 4
        if self.mode == "memory" or (self.mode == "auto" and needed <= self.budget_bytes):
            return MemorySink(layers)
        if self.folder is None:
            self.folder = self._make_folder()
        self.spilled.append(name)
        self._open.append(DiskSink(self.folder, f"{len(self.spilled)}-{name.replace(' ', '_')}", layers))
        return self._open[-1]

    def _make_folder(self) -> Path:
        try:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="steerkit-activations-", dir=self.spill_dir))
        except OSError as e:
            raise spill_error(self.spill_dir, e) from None

    def close(self) -> None:
        for sink in self._open:
            for f in sink.files.values():
                f.close()
        self._open.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> "ActivationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
