"""The emulated clock: one time-dilation factor ``k`` per run, the only way the runtime reads or spends time.

The emulation runs ``k`` times slower than the world it emulates (DESIGN §8): one emulated second lasts ``k``
wall seconds. ``k > 1`` lets a 2-core host emulate classes faster than itself and topologies whose compute adds
up to more cores than it has; ``k < 1`` runs a light topology faster than real time.

Every quantity that means *emulated* time goes through this module:

* ``now()`` / ``now_ns()``: emulated time, ``CLOCK_MONOTONIC / k``. Monotonic time is system-wide, so every
  process of a run on one machine reads the same emulated clock once each has ``configure(k)``-ed it.
* ``sleep(d)`` / ``asleep(d)``: wait ``d`` emulated seconds (``d * k`` wall seconds).
* ``wall(d)``: the wall seconds an emulated duration lasts, for timeouts around emulated work
  (``ray.get(ref, timeout=clock.wall(60))``, ``Event.wait(clock.wall(5))``, ``Future.result``).
* ``emulated(w)``: the emulated length of ``w`` wall seconds.

What stays on wall time, and must not come through here: Ray's own timeouts (actor start-up, health checks),
socket set-up timeouts, host measurements (calibration, thread CPU time), run-duration bookkeeping and
benchmarks that time the host itself. A lint test (``tests/unit/test_clock.py``) forbids the ``time`` module's
clocks in the runtime outside an allow-list; a line that means wall time on purpose says so with ``# wall:``.

One fixed ``k`` per run, set before anything is built and never changed: changing it mid-run would have to
rescale every timer, queued packet and qdisc at once (reference/time-dilation.md §3.6).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

_k = 1.0


def dilation() -> float:
    """This process's time-dilation factor (1.0 unless a run configured it)."""
    return _k


def check(k: float) -> float:
    """``k`` as a float, or ValueError when it is not a positive finite number."""
    try:
        v = float(k)
    except (TypeError, ValueError):
        raise ValueError(f"time dilation must be a positive finite number, got {k!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"time dilation must be a positive finite number, got {k!r}")
    return v


def configure(k: float) -> None:
    """Set this process's dilation factor (every process of a run calls this with the run's ``k``)."""
    global _k
    _k = check(k)


@contextmanager
def dilated(k: float) -> Iterator[float]:
    """``configure(k)`` for the body, then restore the previous factor."""
    prev = _k
    configure(k)
    try:
        yield _k
    finally:
        configure(prev)


def now() -> float:
    """Emulated seconds (an arbitrary origin shared by every process on this machine)."""
    return time.monotonic() / _k  # wall: the one conversion


def now_ns() -> int:
    """Emulated nanoseconds (same origin as ``now``)."""
    t = time.monotonic_ns()  # wall: the one conversion
    return t if _k == 1.0 else int(t / _k)


def wall(seconds: float) -> float:
    """Wall seconds that ``seconds`` of emulated time last."""
    return seconds * _k


def wall_ns(ns: float) -> float:
    """Wall nanoseconds that ``ns`` emulated nanoseconds last."""
    return ns * _k


def emulated(wall_seconds: float) -> float:
    """Emulated seconds that ``wall_seconds`` of wall time represent."""
    return wall_seconds / _k


def sleep(seconds: float) -> None:
    """Sleep ``seconds`` of emulated time."""
    if seconds > 0:
        time.sleep(seconds * _k)  # wall: the one conversion


def sleep_until(t_emulated: float) -> None:
    """Sleep until ``now() >= t_emulated`` (no-op if it has passed)."""
    sleep(t_emulated - now())


async def asleep(seconds: float) -> None:
    """``await`` ``seconds`` of emulated time."""
    await asyncio.sleep(max(0.0, seconds) * _k)


def anchor() -> dict[str, float]:
    """Both clocks at one instant, for the manifest: emulated and monotonic seconds, and UNIX wall time."""
    mono = time.monotonic()  # wall: the anchor
    return {"time_dilation": _k, "emulated_s": mono / _k, "monotonic_s": mono, "unix_s": time.time()}  # wall: anchor
