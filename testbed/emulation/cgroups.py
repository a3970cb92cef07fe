"""CPU and memory caps with cgroups, v1 (this machine kind) and v2 behind one class.

v1 layout (host-facts §4): one hierarchy per controller; the memory child is made *under the
memory cgroup we already sit in* (read from /proc/self/cgroup), so the sandbox's accounting stays
intact. v2: one unified tree, ``cpu.max`` and ``memory.max`` under our own cgroup.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def cgroup_mode() -> str:
    """'v2', 'v1' or 'none': which cgroup interface gives us cpu and memory here."""
    ctrl = ROOT / "cgroup.controllers"
    if ctrl.exists():
        have = ctrl.read_text().split()
        if "cpu" in have and "memory" in have:
            return "v2"
    if (ROOT / "cpu" / "cpu.cfs_quota_us").exists() and (ROOT / "memory").is_dir():
        return "v1"
    return "none"


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path for ``controller`` (v1) or the unified path ('' key, v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _hid, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(",") or (controller == "" and ctrls == ""):
            return path
    return "/"


@dataclass(frozen=True)
class CgroupLeaf:
    """A set of cgroup directories (one per v1 controller, or one v2 directory) for one node."""

    name: str
    mode: str
    dirs: tuple[str, ...]

    @classmethod
    def plan(cls, name: str, mode: str | None = None) -> CgroupLeaf:
        """Where ``name``'s directories will live (nothing is created)."""
        mode = mode or cgroup_mode()
        if mode == "v1":
            cpu = ROOT / "cpu" / _own_cgroup("cpu").lstrip("/") / name
            mem = ROOT / "memory" / _own_cgroup("memory").lstrip("/") / name
            return cls(name, mode, (str(cpu), str(mem)))
        if mode == "v2":
            return cls(name, mode, (str(ROOT / _own_cgroup("").lstrip("/") / name),))
        raise OSError(errno.ENOTSUP, "no usable cgroup interface (need v1 cpu+memory or v2 with cpu,memory)")

    def create(self, cpu_cores: float | None, memory_bytes: int | None, period_us: int = 20_000) -> None:
        """Create the directories and set the limits (``None``: unlimited)."""
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
        self.set_limits(cpu_cores, memory_bytes, period_us)

    def set_limits(self, cpu_cores: float | None, memory_bytes: int | None, period_us: int = 20_000) -> None:
        """Overwrite the limits (re-applying replaces, never stacks)."""
        # The kernel rejects a CFS quota below 1 ms, so the period grows for very small shares.
        if cpu_cores is not None and cpu_cores * period_us < 1000:
            period_us = min(1_000_000, int(1000 / cpu_cores) + 1)  # the kernel's longest period is 1 s
        if self.mode == "v1":
            cpu, mem = (Path(d) for d in self.dirs)
            quota = -1 if cpu_cores is None else max(1000, int(cpu_cores * period_us))
            try:
                (cpu / "cpu.cfs_period_us").write_text(str(period_us))
                (cpu / "cpu.cfs_quota_us").write_text(str(quota))
            except OSError as e:
                # seen now and then as EINVAL on the quota (issue 17): lift the quota, then set period and quota
                # again from a clean state, and if the kernel still refuses, say what was asked
                if e.errno != errno.EINVAL:
                    raise
                try:
                    (cpu / "cpu.cfs_quota_us").write_text("-1")
                    (cpu / "cpu.cfs_period_us").write_text(str(period_us))
                    (cpu / "cpu.cfs_quota_us").write_text(str(quota))
                except OSError as e2:
                    raise OSError(e2.errno, f"{cpu}: the kernel refused cfs_period_us={period_us} "
                                            f"cfs_quota_us={quota} ({cpu_cores} cores): {e2.strerror}") from e
            if memory_bytes is not None:
                (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
                memsw = mem / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    try:
                        memsw.write_text(str(memory_bytes))
                    except OSError:
                        pass
        else:
            d = Path(self.dirs[0])
            quota_s = "max" if cpu_cores is None else str(max(1000, int(cpu_cores * period_us)))
            (d / "cpu.max").write_text(f"{quota_s} {period_us}")
            if memory_bytes is not None:
                (d / "memory.max").write_text(str(memory_bytes))

    def attach(self, pid: int) -> None:
        """Move every thread of ``pid`` into this cgroup (threads created later inherit it)."""
        for d in self.dirs:
            (Path(d) / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out |= {int(x) for x in (Path(d) / "cgroup.procs").read_text().split()}
            except FileNotFoundError:
                pass
        return sorted(out)

    def stats(self) -> dict[str, float]:
        """Throttling and memory counters: shows whether the node hit its caps."""
        out: dict[str, float] = {}
        try:
            if self.mode == "v1":
                cpu, mem = (Path(d) for d in self.dirs)
                for line in (cpu / "cpu.stat").read_text().splitlines():
                    k, v = line.split()
                    out[f"cpu_{k}"] = float(v)
                out["mem_max_usage_bytes"] = float((mem / "memory.max_usage_in_bytes").read_text())
                for line in (mem / "memory.oom_control").read_text().splitlines():
                    k, v = line.split()
                    if k == "oom_kill":
                        out["mem_oom_kill"] = float(v)
            else:
                d = Path(self.dirs[0])
                for line in (d / "cpu.stat").read_text().splitlines():
                    k, v = line.split()
                    out[f"cpu_{k}"] = float(v)
                out["mem_max_usage_bytes"] = float((d / "memory.peak").read_text()) if (
                    d / "memory.peak").exists() else float("nan")
        except (OSError, ValueError):
            pass
        return out

    def remove(self) -> None:
        """End any process still in the leaf and remove the directories; missing is fine.

        The leaf is the run's own: only its compute processes and CPU-spike burners are ever attached, and teardown
        removes it after ending those. A process still inside is a leftover of the run (e.g. a burner whose runner
        was killed): it is ended, by PID, not released onto the host with no cap."""
        import signal

        for d in reversed(self.dirs):
            p = Path(d)
            if not p.exists():
                continue
            for _ in range(100):
                try:
                    for pid in (p / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass  # the task exited meanwhile
                    p.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.05)  # wall: retry a busy cgroup
            else:
                raise OSError(errno.EBUSY, f"cgroup {p} is still busy after 5 s")


def list_leaves(prefix: str, depth: int = 4) -> list[str]:
    """Directories of ours (names starting with ``prefix``) anywhere near the top of our controllers.

    The walk goes a few levels deep because each command here runs in its own nested memory
    cgroup, so a leaf made by an earlier (killed) command is not under ours.
    """
    mode = cgroup_mode()
    bases = [ROOT / "cpu", ROOT / "memory"] if mode == "v1" else [ROOT] if mode == "v2" else []
    found: list[str] = []
    for base in bases:
        stack = [(base, 0)]
        while stack:
            d, lvl = stack.pop()
            try:
                children = [p for p in d.iterdir() if p.is_dir()]
            except OSError:
                continue
            for c in children:
                if c.name.startswith(prefix):
                    found.append(str(c))
                elif lvl + 1 < depth:
                    stack.append((c, lvl + 1))
    return sorted(found)
