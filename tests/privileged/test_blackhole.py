"""The host blackhole route, shared by concurrent runs: reference-counted through their ledgers under one lock, so
no run goes unsealed while another lets go of it, and the last run out removes it (issue 17)."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

from testbed.lifecycle.cleanup import blackhole_present, remove_entry, take_blackhole
from testbed.lifecycle.ledger import Ledger, read_pending

pytestmark = pytest.mark.privileged("host routes")
BH = "198.18.0.0/15"


def release(ledger: Ledger) -> None:
    for e in read_pending(ledger.path):
        if e.kind == "blackhole":
            remove_entry(e, ledger.path)
            ledger.forget("blackhole", e.name)


def test_the_last_run_out_removes_the_route(tmp_path: Path) -> None:
    if blackhole_present(BH):
        pytest.skip("the route is already there (another run on this host, or a leftover: testbed clean)")
    # two runs with ledgers in different state directories: the count is host-wide, not per directory
    a, b = Ledger("bha00001"), Ledger("bhb00001", tmp_path / "elsewhere")
    try:
        take_blackhole(BH, a)
        take_blackhole(BH, b)  # present, but because of a live run of ours: not "preexisting"
        assert [e.data["preexisting"] for e in read_pending(b.path) if e.kind == "blackhole"] == [False]
        release(a)
        assert blackhole_present(BH), "removed while another run still relied on it"
        release(b)
        assert not blackhole_present(BH), "left behind by the last run"
    finally:
        release(a)
        release(b)
        a.close()
        b.close()


def _run(state: str, rid: str, go: object, out: object) -> None:
    go.wait()  # type: ignore[attr-defined]
    led = Ledger(rid, Path(state))
    try:
        take_blackhole(BH, led)
        out.put((rid, blackhole_present(BH)))  # type: ignore[attr-defined]
    finally:
        release(led)
        led.close()


def test_two_runs_at_the_same_moment_five_times(tmp_path: Path) -> None:
    if blackhole_present(BH):
        pytest.skip("the route is already there (another run on this host, or a leftover: testbed clean)")
    ctx = mp.get_context("fork")
    for i in range(5):
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_run, args=(str(tmp_path), f"bh{i}{j}{os.getpid() % 1000:03d}"[:8], go, out))
                 for j in range(2)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        seen = [out.get(timeout=5) for _ in procs]
        assert all(present for _, present in seen), seen  # each run had the route while it ran
        assert not blackhole_present(BH), f"round {i}: the route outlived both runs"
