"""Peak memory of a phase (training), measured without tracemalloc, which cannot see torch tensors."""

from __future__ import annotations

import os
import threading
from typing import Any

import torch


class MemoryMeter:
    """Peak memory of a phase, measured two ways (both reported, in MiB).

    ``maxrss_*``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's lifetime peak resident
    set): the delta is what the phase added to the peak, 0 when an earlier phase peaked higher.
    ``rss_*``: the current resident set (``/proc/self/statm``) sampled every 20 ms by a thread:
    ``rss_increase_mib`` = sampled peak - resident set at the start, i.e. what the phase itself held
    on top of the loaded model. tracemalloc is not used: it does not see torch's tensor memory.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._peak = 0
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._rss())

    @staticmethod
    def _maxrss() -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    def start(self) -> None:
        self._start_rss = self._peak = self._rss()
        self._start_max = self._maxrss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        mib = 1024 * 1024
        out = {"measure": "ru_maxrss delta and 20 ms-sampled /proc/self/statm RSS (CPU); "
                          "torch.cuda.max_memory_allocated (GPU)",
               "rss_start_mib": round(self._start_rss / mib, 1), "rss_peak_mib": round(self._peak / mib, 1),
               "rss_increase_mib": round((self._peak - self._start_rss) / mib, 1),
               "maxrss_before_mib": round(self._start_max / mib, 1),
               "maxrss_after_mib": round(self._maxrss() / mib, 1),
               "maxrss_delta_mib": round((self._maxrss() - self._start_max) / mib, 1)}
        if torch.cuda.is_available():
            out["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / mib, 1)
        return out
