"""Append-only record of every kernel object and process a run creates.

Each entry is written (and fsynced) *before* the object is created, so a crash at any point leaves
a trace that ``testbed clean`` can follow. One JSON-lines file per run under the state directory
(``$TESTBED_STATE_DIR``, default ``/run/testbed`` as root: tmpfs, so it goes with a reboot, like
the namespaces and cgroups it describes).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "tb-"


def state_dir() -> Path:
    """Where ledgers live."""
    env = os.environ.get("TESTBED_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/testbed")
    return Path.home() / ".cache" / "testbed" / "state"


@dataclass(frozen=True)
class Entry:
    """One created object: its kind (netns, veth, route, cgroup, pid) and identifying fields."""

    kind: str
    name: str
    data: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


class Ledger:
    """The ledger of one run."""

    def __init__(self, run_id: str, directory: Path | None = None) -> None:
        self.run_id = run_id
        self.path = (directory or state_dir()) / f"{run_id}.jsonl"
        self._lock = threading.Lock()
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"op": "open", "run_id": run_id, "owner_pid": os.getpid(),
                          "owner_start": _proc_start(os.getpid()), "time": time.time()})

    def _append(self, rec: dict[str, Any]) -> None:
        with self._lock, open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def record(self, kind: str, name: str, **data: Any) -> None:
        """Record the intent to create ``kind``/``name`` (call before creating it)."""
        self._append({"op": "create", "kind": kind, "name": name, "data": data})

    def forget(self, kind: str, name: str) -> None:
        """Record that ``kind``/``name`` is gone."""
        self._append({"op": "remove", "kind": kind, "name": name})

    def pending(self) -> list[Entry]:
        """Objects recorded and not yet removed, in creation order."""
        return read_pending(self.path)

    def close(self) -> None:
        """Delete the ledger file once nothing is pending."""
        if not self.pending():
            self.path.unlink(missing_ok=True)


def _proc_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def read_header(path: Path) -> dict[str, Any]:
    with open(path) as f:
        first = f.readline()
    try:
        rec: dict[str, Any] = json.loads(first)
        return rec
    except json.JSONDecodeError:
        return {}


def read_pending(path: Path) -> list[Entry]:
    """Parse a ledger file into the list of objects still pending."""
    live: dict[tuple[str, str], Entry] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a crash
        if rec.get("op") == "create":
            e = Entry(rec["kind"], rec["name"], rec.get("data", {}))
            live.pop(e.key, None)
            live[e.key] = e
        elif rec.get("op") == "remove":
            live.pop((rec["kind"], rec["name"]), None)
    return list(live.values())


def owner_alive(path: Path) -> bool:
    """True if the process that opened this ledger is still running (same PID and start time)."""
    head = read_header(path)
    pid = head.get("owner_pid")
    if not isinstance(pid, int):
        return False
    start = _proc_start(pid)
    if start is None:
        return False
    recorded = head.get("owner_start")
    return recorded is None or abs(start - float(recorded)) < 1.0


def all_ledgers() -> list[Path]:
    d = state_dir()
    return sorted(d.glob("*.jsonl")) if d.exists() else []
