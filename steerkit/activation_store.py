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
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from .errors import Problem, RecipeError

MODES = ("auto", "memory", "disk")
DEFAULT_BUDGET_BYTES = 1 << 30  # auto spills a collection larger than 1 GiB


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def spill_error(where: Path, e: OSError) -> RecipeError:
    return RecipeError("cannot spill activations to disk", [Problem(
        f"{where}: {e.strerror or e}", str(where), None, None, "spill_dir",
        "pass --spill-dir to a writable folder with room for the activations (see docs/memory.md)", "SK761")])


class MemorySink:
    """One preallocated [rows, d] float32 buffer per layer; each batch is copied to its final rows.

    Preallocating matters as much as the arithmetic: thousands of small per-batch tensors kept alive
    between the forward passes' temporaries fragment the allocator, and a final concatenation doubles
    the peak (measured by benchmarks/extract_memory.py before this design: 8x the pooled size)."""

    def __init__(self, layers, rows: int):
        self.rows = rows
        self.buffers: dict[int, Optional[torch.Tensor]] = dict.fromkeys(layers)

    def add(self, layer: int, rows: torch.Tensor, positions: torch.Tensor) -> None:
        buf = self.buffers[layer]
        if buf is None:
            buf = self.buffers[layer] = torch.empty(self.rows, rows.shape[1], dtype=torch.float32)
        buf[positions] = rows.to(torch.float32)

    def finish(self) -> dict[int, torch.Tensor]:
        return {layer: torch.zeros(0, 0) if b is None else b for layer, b in self.buffers.items()}


class DiskSink:
    """Batches appended to one raw float32 file per layer (row-major [rows, d]), in arrival order."""

    def __init__(self, folder: Path, name: str, layers):
        self.paths = {layer: folder / f"{name}.layer{layer}.f32" for layer in layers}
        self.files = {layer: open(path, "wb") for layer, path in self.paths.items()}
        self.first = next(iter(self.paths), None)  # every layer receives the same batches in the same order
        self.arrival: list[torch.Tensor] = []  # final rows of each batch, in the order they were written
        self.width = 0

    def add(self, layer: int, rows: torch.Tensor, positions: torch.Tensor) -> None:
        rows = rows.detach().to(torch.float32).contiguous()
        self.width = rows.shape[1]
        try:
            self.files[layer].write(rows.numpy().tobytes())
        except OSError as e:  # e.g. the disk is full
            raise spill_error(self.paths[layer].parent, e) from None
        if layer == self.first:
            self.arrival.append(positions.to(torch.long))

    def finish(self) -> "DiskLayers":
        for f in self.files.values():
            f.close()
        arrived = torch.cat(self.arrival) if self.arrival else torch.zeros(0, dtype=torch.long)
        return DiskLayers(self.paths, self.width, arrived)


class DiskLayers(Mapping):
    """{layer: [N, d] float32}, read from disk one layer per lookup (the caller keeps what it needs).

    A lookup reads the file in chunks of about 16 MiB straight into the result's rows, so a layer costs
    its own size plus one chunk (a memory map plus a reordering copy would hold it twice)."""

    CHUNK_BYTES = 16 << 20

    def __init__(self, paths: dict[int, Path], d: int, arrived: torch.Tensor):
        self.paths, self.d, self.arrived = paths, d, arrived  # arrived[k]: final row of the k-th stored row
        self.n = len(arrived)

    def __getitem__(self, layer: int) -> torch.Tensor:
        rows = torch.empty(self.n, self.d, dtype=torch.float32)
        step = max(1, self.CHUNK_BYTES // max(1, self.d * 4))
        with open(self.paths[layer], "rb") as f:
            for start in range(0, self.n, step):
                count = min(step, self.n - start)
                chunk = np.fromfile(f, dtype=np.float32, count=count * self.d)
                if chunk.size != count * self.d:
                    raise spill_error(self.paths[layer], OSError(f"shorter than the {self.n} rows written to it"))
                rows[self.arrived[start:start + count]] = torch.from_numpy(chunk.reshape(count, self.d))
        return rows

    def __iter__(self) -> Iterator[int]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


class ActivationStore:
    """Hands out a sink per collection and owns the spill folder (a context manager)."""

    def __init__(self, mode: str = "auto", *, spill_dir: Optional[str | os.PathLike] = None,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES, log: Optional[Callable[[str], None]] = None):
        if mode not in MODES:
            raise RecipeError("invalid activation store", [Problem(
                f"activations must be one of {', '.join(MODES)}; got {mode!r}", None, None, None, "activations",
                "use --activations auto|memory|disk", "SK760")])
        self.mode, self.budget_bytes, self.log = mode, budget_bytes, log
        self.spill_dir = Path(spill_dir or os.environ.get("STEERKIT_SPILL_DIR") or tempfile.gettempdir())
        self.folder: Optional[Path] = None
        self._open: list[DiskSink] = []
        self.spilled: list[str] = []  # names of the collections written to disk, in order (also file prefixes)

    def sink(self, name: str, rows: int, layers, width: int):
        """A sink for ``rows`` rows of ``width`` floats at each of ``layers``."""
        layers = list(layers)
        needed = rows * len(layers) * width * 4
        in_memory = self.mode == "memory" or (self.mode == "auto" and needed <= self.budget_bytes)
        if self.log:
            where = "in memory" if in_memory else f"on disk, {_size(rows * width * 4)} per layer read back"
            self.log(f"{name}: {rows:,} rows x {len(layers)} layers x {width} floats = {_size(needed)}, {where}")
        if in_memory:
            return MemorySink(layers, rows)
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
