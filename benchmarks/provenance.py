"""Where a result came from: the git commit (and whether the code differed from it), library versions
and the machine. Every benchmark result file records this under ``provenance`` so a stale figure can be
told from a fresh one (tests/test_results_provenance.py compares the commit with the code it measures).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("steerkit-mllm", "torch", "transformers", "nnsight", "safetensors", "pydantic", "numpy")


def _git(*args: str, root: Path = ROOT) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}


def provenance(root: Path = ROOT) -> dict[str, Any]:
    """``{git_commit, dirty, versions, machine, created_at}``; git fields are None outside a checkout.

    ``dirty``: tracked code differed from the commit when the result was made (result files themselves,
    under benchmarks/results/, do not count: a rerun rewrites them)."""
    commit = _git("rev-parse", "HEAD", root=root)
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results",
                  root=root)
    return {"git_commit": commit, "dirty": None if status is None else bool(status),
            "versions": versions(), "machine": machine(), "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
