"""Shared limits for the hostile suite: every case must answer within seconds, never hang the run."""

from __future__ import annotations

import contextlib
import signal

import pytest

SECONDS = 5  # issue #18: "no hang past 5 s" (after imports are warm)


@contextlib.contextmanager
def within(seconds: int = SECONDS):
    """Fail (TimeoutError) instead of hanging when the body runs past ``seconds`` (SIGALRM, main thread)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def boom(*_):
        raise TimeoutError(f"no answer within {seconds}s (hang?)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def deadline():
    return within
