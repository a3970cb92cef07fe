"""testbed.clock (the emulated clock) and the lint that keeps the runtime on it.

The lint reads every module of ``workloads/``, ``actors/`` and ``testbed/`` with ``ast`` (comments and strings
do not count) and refuses the ``time`` module's clocks and sleep there: emulated time goes through
``testbed.clock``. A line that means wall time on purpose carries a ``# wall: <why>`` comment.
"""

from __future__ import annotations

import ast
import asyncio
import io
import math
import time
import tokenize
from fnmatch import fnmatch
from pathlib import Path

import pytest

from testbed import clock

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("workloads", "actors", "testbed")
FORBIDDEN = frozenset({"sleep", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "time"})

# modules that are wall time by nature (paths relative to the repository root, fnmatch patterns)
ALLOWED = {
    "testbed/clock.py": "the one place that converts between wall and emulated time",
    "testbed/calibration.py": "measures the host's speed",
    "testbed/cli/*": "the command line: progress, ETA and run-duration displays",
    "testbed/doctor.py": "checks the host, not the emulation",
    "testbed/lifecycle/*": "run bookkeeping and cleanup of host resources",
    "testbed/emulation/mn_driver.py": "drives Mininet's processes on the host",
    "testbed/suites.py": "runs suites of runs: wall-time bookkeeping",
    "testbed/sweep.py": "runs sweeps of runs: wall-time bookkeeping",
    "testbed/chain/bench.py": "benchmark of the chain on the host",
    "workloads/*/bench.py": "workload benchmarks time the host itself",
}


def _wall_lines(src: str) -> set[int]:
    """Lines that carry a ``# wall:`` comment (a real comment token, not text inside a string)."""
    out = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT and tok.string.lstrip("#").strip().startswith("wall:"):
            out.add(tok.start[0])
    return out


def offenders(src: str, name: str = "<src>") -> list[str]:
    """``name:line: what`` for each use of the time module's clocks in ``src`` not marked ``# wall:``."""
    tree = ast.parse(src)
    wall = _wall_lines(src)
    modules: set[str] = set()  # names bound to the time module
    direct: dict[str, str] = {}  # names bound to a forbidden function by ``from time import``
    hits: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "time"}
        elif isinstance(node, ast.ImportFrom) and node.module == "time" and node.level == 0:
            for a in node.names:
                if a.name in FORBIDDEN or a.name == "*":
                    direct[a.asname or a.name] = a.name
                    hits.append((node.lineno, f"from time import {a.name}"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr in FORBIDDEN):
            hits.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in direct:
            hits.append((node.lineno, f"{node.id} (time.{direct[node.id]})"))
    return [f"{name}:{line}: {what}" for line, what in sorted(set(hits)) if line not in wall]


def _allowed(rel: str) -> bool:
    return any(fnmatch(rel, pat) for pat in ALLOWED)


def test_runtime_reads_time_only_through_the_clock() -> None:
    bad = []
    for top in SCANNED:
        for f in sorted((ROOT / top).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            if not _allowed(rel):
                bad += offenders(f.read_text(), rel)
    assert not bad, ("use testbed.clock for emulated time, or mark a line that means wall time with "
                     "'# wall: <why>':\n" + "\n".join(bad))


def test_allow_list_names_existing_modules() -> None:
    """A stale entry would silently allow a future module of that name."""
    for pat in ALLOWED:
        assert list(ROOT.glob(pat)), f"allow-list entry {pat!r} matches no file"


def test_lint_catches_and_spares() -> None:
    src = '''
import time
import time as t
from time import monotonic, thread_time
from time import perf_counter as pc  # wall: marked
x = "time.sleep(1)"  # a string; time.sleep in a comment
time.sleep(1)
t.time()
y = monotonic()
z = pc()
time.thread_time()
f = time.monotonic_ns  # wall: host measurement
g = time.perf_counter_ns
'''
    got = [o.split(":", 2)[1:] for o in offenders(src)]
    lines = sorted({int(line) for line, _ in got})
    assert lines == [4, 7, 8, 9, 10, 13], got


# -- the clock itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, -1, float("nan"), float("inf"), float("-inf"), "x", None])
def test_check_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        clock.check(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        clock.configure(bad)  # type: ignore[arg-type]


def test_check_accepts() -> None:
    assert clock.check(2) == 2.0 and isinstance(clock.check(2), float)
    assert clock.check("0.5") == 0.5  # type: ignore[arg-type]
    assert clock.check(1e-3) == 1e-3


def test_configure_and_dilated_restore() -> None:
    before = clock.dilation()
    with clock.dilated(4) as k:
        assert k == 4.0 == clock.dilation()
        with clock.dilated(0.5):
            assert clock.dilation() == 0.5
        assert clock.dilation() == 4.0
    assert clock.dilation() == before
    with pytest.raises(RuntimeError), clock.dilated(9):
        raise RuntimeError
    assert clock.dilation() == before
    with pytest.raises(ValueError), clock.dilated(-1):
        pass
    assert clock.dilation() == before
    try:
        clock.configure(3)
        assert clock.dilation() == 3.0
    finally:
        clock.configure(before)


def test_now_runs_k_times_slower_than_monotonic() -> None:
    with clock.dilated(1000):
        w0 = time.monotonic()
        a, a_ns = clock.now(), clock.now_ns()
        time.sleep(0.05)
        b, b_ns = clock.now(), clock.now_ns()
        w1 = time.monotonic()
    # time.sleep lasts at least its argument; a slow host only lengthens [w0, w1], so both bounds hold anywhere
    assert 0.05 / 1000 * (1 - 1e-6) <= b - a <= (w1 - w0) / 1000 * (1 + 1e-6) + 1e-9
    assert 0.05 / 1000 * 1e9 * (1 - 1e-6) <= b_ns - a_ns <= (w1 - w0) / 1000 * 1e9 * (1 + 1e-6) + 1
    assert abs(a - time.monotonic() / 1000) < 1.0  # same origin as monotonic, / k


def test_now_ns_matches_now() -> None:
    for k in (1.0, 7.0, 0.25):
        with clock.dilated(k):
            a = clock.now()
            n = clock.now_ns()
            b = clock.now()
        assert isinstance(n, int)
        assert a * 1e9 - 1e3 <= n <= b * 1e9 + 1e3


def test_k1_is_monotonic() -> None:
    with clock.dilated(1):
        a = time.monotonic_ns()
        n = clock.now_ns()
        b = time.monotonic_ns()
        assert a <= n <= b
        assert clock.wall(2.5) == 2.5 and clock.emulated(2.5) == 2.5


def test_wall_and_emulated_are_inverse() -> None:
    for k in (1.0, 50.0, 0.3):
        with clock.dilated(k):
            for x in (0.0, 1e-3, 1.0, 123.456):
                assert clock.wall(x) == pytest.approx(x * k)
                assert clock.emulated(clock.wall(x)) == pytest.approx(x)
                assert clock.wall(clock.emulated(x)) == pytest.approx(x)
                assert clock.wall_ns(x * 1e9) == pytest.approx(x * k * 1e9)


def test_sleep_lasts_k_times_longer() -> None:
    with clock.dilated(5):
        w0 = time.monotonic()
        clock.sleep(0.01)
        assert time.monotonic() - w0 >= 0.05 * (1 - 1e-6)
        clock.sleep(0)
        clock.sleep(-1)  # a no-op, not an error
        w0 = time.monotonic()
        clock.sleep_until(clock.now() + 0.01)
        assert time.monotonic() - w0 >= 0.05 - 1e-3
        clock.sleep_until(clock.now() - 10)  # passed: a no-op


def test_asleep_lasts_k_times_longer() -> None:
    async def go() -> float:
        w0 = time.monotonic()
        await clock.asleep(0.01)
        await clock.asleep(-1)
        return time.monotonic() - w0

    with clock.dilated(3):
        assert asyncio.run(go()) >= 0.03 - 1e-3


def test_anchor() -> None:
    with clock.dilated(2):
        a = clock.anchor()
    assert a["time_dilation"] == 2.0
    assert math.isclose(a["emulated_s"] * 2, a["monotonic_s"])
    assert abs(a["unix_s"] - time.time()) < 3600


def test_chain_blocks_follow_the_emulated_clock() -> None:
    """The ChainActor takes the run's k: a 50 ms block interval at k = 4 is a block every 200 ms of wall time."""
    pytest.importorskip("eth_tester")
    from eth_tester import PyEVMBackend  # noqa: F401  (imported ahead: the bound below counts from w0)
    from web3 import EthereumTesterProvider  # noqa: F401

    from actors.chain import EVMChainActor

    with clock.dilated(1):  # the actor's constructor configures this process: restore it afterwards
        w0 = time.monotonic()
        ch = EVMChainActor(None, 50.0, time_dilation=4)
        try:
            assert clock.dilation() == 4.0
            time.sleep(0.5)
            b = ch.info()["block"]
            w1 = time.monotonic()
            # the miner cannot run ahead of its schedule, however slow the host (at k = 1: about 4x as many)
            assert b <= (w1 - w0) / 0.2 + 1
            while ch.info()["block"] == b and time.monotonic() < w1 + 60:  # and it does mine
                time.sleep(0.05)
            assert ch.info()["block"] > b
        finally:
            ch.close()
