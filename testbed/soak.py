"""``testbed bench soak``: runs killed at random moments leave nothing behind once ``testbed clean`` has run.

Each run is a real ``testbed run`` in its own session (kernel links and cgroup caps as root, a CPU-spike burner
inside the edge's cgroup, endless requests), SIGKILLed at a random moment of one of three phases, in turn:

* ``build``: 0-20 s after the run's ledger exists (it is written before the first kernel object), if the run
  has not written spans by then: Ray's start, the namespaces and links, the caps and the actors;
* ``mid-run``: once the first span chunk is on disk, plus 0-2 s;
* ``teardown``: once spans are on disk, SIGTERM (the runner starts tearing down), then SIGKILL 0-1.5 s later.

Half of the kills hit the runner alone (``kill PID``: its children are orphaned and must die on their own), half
its whole process group. After each kill ``testbed clean`` runs, and the soak checks that no namespace, veth,
cgroup leaf or blackhole route of ours is left, and that no process the run had started (every descendant seen
just before the kill, identified by PID and start time) is still alive.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("build", "mid-run", "teardown")
GRACE_S = 30.0  # wall: how long orphaned processes get to notice that their runner is gone


def _experiment(d: Path, root: bool) -> Path:
    links, compute = ("kernel", "cgroup") if root else ("userspace", "dilation")
    exp = d / "soak.yaml"
    exp.write_text(f"""
name: soak
topology: {ROOT / 'topologies/minimal.yaml'}
time_dilation: 1
workload: {{name: inference, params: {{model: small_cnn, tiers: [edge], requests_per_device: 1000000,
  warmup: 0, chunk: 20, interval_ms: 5}}}}
backends: {{links: {links}, compute: {compute}}}
scenario:
  events:
    - {{at_s: 0.2, cpu_spike: edge, cores: 1, duration_s: 100000}}
""")
    return exp


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s  # wall: a bound on a real process, not emulated time
    while time.monotonic() < deadline:  # wall: a real process, not emulated time
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)  # wall: polling files the run writes
    return False


def _descendants(pid: int) -> list[tuple[int, float, str]]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            out.append((k.pid, k.create_time(), k.name()))
        except psutil.NoSuchProcess:
            continue
    return out


def _alive(procs: list[tuple[int, float, str]]) -> list[str]:
    out = []
    for pid, start, name in procs:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - start) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"process {pid} ({name})")
        except psutil.NoSuchProcess:
            continue
    return out


def soak_once(i: int, exp: Path, out: Path, state: Path, rng: random.Random) -> dict[str, Any]:
    """One run, killed in phase ``PHASES[i % 3]``, the runner alone for even ``i`` and its group for odd."""
    from testbed.lifecycle.cleanup import present_objects

    phase, group = PHASES[i % len(PHASES)], i % 2 == 1
    env = dict(os.environ, TESTBED_STATE_DIR=str(state))
    res = out / f"run{i:03d}"
    t0 = time.monotonic()  # wall: a real process, not emulated time
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli.app", "run", str(exp), "--out", str(res), "--no-fit"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    row: dict[str, Any] = {"run": i, "phase": phase, "kill": "group" if group else "runner", "killed_at_s": None,
                           "reached": False, "leftovers": [], "ok": False}
    seen: list[tuple[int, float, str]] = []
    try:
        spans = lambda: any(res.glob("soak/*/spans/part-*.parquet"))  # noqa: E731
        if phase == "build":  # any moment from the ledger's first line to the first spans (about 20 s here)
            row["reached"] = _wait_for(lambda: any(state.glob("*.jsonl")), proc, 180)
            if _wait_for(spans, proc, rng.uniform(0.0, 20.0)):
                row["phase"] = "mid-run"  # the build was done before the moment came: it counts as mid-run
        else:
            row["reached"] = _wait_for(spans, proc, 180)
            if phase == "mid-run":
                time.sleep(rng.uniform(0.0, 2.0))  # wall: a real process, not emulated time
            else:
                seen = _descendants(proc.pid)
                proc.send_signal(signal.SIGTERM)
                time.sleep(rng.uniform(0.0, 1.5))  # wall: a real process, not emulated time
        seen = sorted(set(seen) | set(_descendants(proc.pid)))
        row["killed_at_s"] = round(time.monotonic() - t0, 2)  # wall: a real process, not emulated time
        try:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass  # it had finished tearing down by itself (teardown phase)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
    deadline = time.monotonic() + GRACE_S  # wall: orphans end when they see their runner gone
    while _alive(seen) and time.monotonic() < deadline:  # wall: a real process, not emulated time
        time.sleep(0.2)  # wall: a real process, not emulated time
    clean = subprocess.run([sys.executable, "-m", "testbed.cli.app", "clean"], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    left = present_objects() + _alive(seen)
    if clean.returncode != 0:
        left.append(f"testbed clean exited {clean.returncode}: {clean.stderr.strip()[-300:]}")
    row.update(leftovers=left, processes_seen=len(seen), ok=not left and row["reached"])
    return row


def run_soak(runs: int = 50, seed: int = 0, out_root: Path = Path("results/bench"),
             progress: Callable[[int, dict[str, Any]], None] | None = None) -> tuple[list[dict[str, Any]], Path]:
    """``runs`` killed runs one after another (see the module's docstring); a row per run. Refuses to start while
    objects of ours already exist, since it could not tell them from its own leftovers."""
    import datetime as dt

    from testbed.errors import ResourceError
    from testbed.lifecycle.cleanup import present_objects
    from testbed.results import write_json

    before = present_objects()
    if before:
        raise ResourceError(f"objects of ours exist before the soak starts: {before[:5]}; run `testbed clean` "
                            "(or wait for the runs that own them to end)")
    out = out_root / f"soak-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="testbed-soak-") as d:
        exp = _experiment(Path(d), os.geteuid() == 0)
        for i in range(runs):
            row = soak_once(i, exp, Path(d) / "res", Path(d) / "state", rng)
            rows.append(row)
            if progress:
                progress(i, row)
            if row["leftovers"]:  # the next run must start clean, or it would inherit these
                subprocess.run([sys.executable, "-m", "testbed.cli.app", "clean", "--all"], capture_output=True,
                               timeout=300, check=False, env=dict(os.environ, TESTBED_STATE_DIR=str(Path(d) / "state")))
    write_json(out / "summary.json", rows)
    return rows, out
