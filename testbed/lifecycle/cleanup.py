"""Idempotent removal of what a run created, from its ledger or by our name prefix.

Order (host-facts §5): processes of ours (by recorded PID and start time, never by name) →
cgroups (tasks moved out, children first) → namespaces (their veths and ifbs go with them) →
leftover host-side veths → the host blackhole route.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from testbed.lifecycle.ledger import PREFIX, Entry, Ledger, all_ledgers, owner_alive, read_pending

logger = logging.getLogger(__name__)

_ORDER = {"pid": 0, "cgroup": 1, "netns": 2, "veth": 3, "blackhole": 4}


@dataclass
class CleanReport:
    """What a cleanup removed, and what it could not."""

    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_live_runs: list[str] = field(default_factory=list)


def _kill_pid(data: dict[str, object]) -> bool:
    import psutil

    pid = int(str(data["pid"]))
    try:
        proc = psutil.Process(pid)
        start = data.get("start")
        if start is not None and abs(proc.create_time() - float(str(start))) > 1.0:
            return False  # the PID was reused by some other process: not ours
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    except psutil.NoSuchProcess:
        pass
    return True


# The runs that rely on the host blackhole route, one file each, and the lock under which a run takes or lets go of
# the route. Both are host-wide, whatever a run's state directory (its ledger's folder): a run that saw the route
# present while another removed it would run unsealed, and one that took a run's route for somebody else's would
# leave it behind.
BLACKHOLE_DIR = Path("/run/testbed-blackhole")


@contextmanager
def blackhole_lock() -> Iterator[None]:
    """Exclusive, across processes, while a run decides whether to add or remove the host blackhole route."""
    BLACKHOLE_DIR.mkdir(parents=True, exist_ok=True)
    with open(BLACKHOLE_DIR / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _live_holders(exclude: str | None = None) -> list[str]:
    """Run ids whose process still relies on the route (call under ``blackhole_lock``); dead ones are dropped."""
    import json

    from testbed.lifecycle.ledger import _proc_start

    out = []
    for f in sorted(BLACKHOLE_DIR.glob("*.json")):
        try:
            d = json.loads(f.read_text())
            start = _proc_start(int(d["pid"]))
            alive = start is not None and abs(start - float(d["start"])) < 1.0
        except (OSError, ValueError, KeyError, TypeError):
            alive = False
        if not alive:
            f.unlink(missing_ok=True)
        elif f.stem != exclude:
            out.append(f.stem)
    return out


def take_blackhole(dst: str, ledger: Ledger) -> None:
    """Make sure the host blackholes ``dst`` for this run, and record that the run relies on it (a holder file and
    a ledger entry). Reference-counted, under ``blackhole_lock``: the route counts as ``preexisting`` (never removed
    by us) only if it is there while no live run of ours holds it, i.e. someone else put it there."""
    import json

    from testbed.lifecycle.ledger import _proc_start

    rid = ledger.path.stem
    with blackhole_lock():
        present = blackhole_present(dst)
        preexisting = present and not _live_holders(exclude=rid) and not _blackhole_used_elsewhere(dst, ledger.path)
        ledger.record("blackhole", dst, preexisting=preexisting)
        (BLACKHOLE_DIR / f"{rid}.json").write_text(json.dumps({"pid": os.getpid(), "start": _proc_start(os.getpid()),
                                                               "dst": dst}))
        if not present:
            add_blackhole(dst)


def release_blackhole(dst: str, preexisting: bool, own_ledger: Path | None) -> None:
    """Let go of the route for the run of ``own_ledger``; the last run out removes it (unless it was there first)."""
    with blackhole_lock():
        if own_ledger is not None:
            (BLACKHOLE_DIR / f"{own_ledger.stem}.json").unlink(missing_ok=True)
        others = _live_holders() or _blackhole_used_elsewhere(dst, own_ledger)
        if not preexisting and not others:
            remove_blackhole(dst)


def _blackhole_used_elsewhere(dst: str, own: Path | None) -> bool:
    """True if another live run's ledger still relies on the host blackhole route."""
    for path in all_ledgers():
        if own is not None and path.resolve() == own.resolve():
            continue
        if owner_alive(path) and any(e.kind == "blackhole" and e.name == dst for e in read_pending(path)):
            return True
    return False


def remove_entry(e: Entry, own_ledger: Path | None = None) -> None:
    """Remove one recorded object; an object that is already gone counts as removed.

    The host blackhole route is shared by concurrent runs: it is removed only by the last run
    that relies on it, and never if it existed before any run of ours.
    """
    if e.kind == "pid":
        _kill_pid(e.data)
    elif e.kind == "cgroup":
        from testbed.emulation.cgroups import CgroupLeaf

        CgroupLeaf(e.name, str(e.data.get("mode", "v1")), tuple(e.data["dirs"])).remove()
    elif e.kind == "netns":
        from testbed.emulation.netns import remove_netns

        remove_netns(e.name)
    elif e.kind == "veth":
        _remove_host_link(e.name)
    elif e.kind == "blackhole":
        release_blackhole(e.name, bool(e.data.get("preexisting")), own_ledger)
    else:  # pragma: no cover - a newer ledger format
        logger.warning("unknown ledger entry kind %s (%s)", e.kind, e.name)


def _remove_host_link(ifname: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        idx = ip.link_lookup(ifname=ifname)
        if idx:
            ip.link("del", index=idx[0])


def blackhole_present(dst: str) -> bool:
    from pyroute2 import IPRoute

    net, plen = dst.split("/")
    with IPRoute() as ip:
        for r in ip.get_routes(family=2, type="blackhole"):
            if r.get_attr("RTA_DST") == net and r["dst_len"] == int(plen):
                return True
    return False


def add_blackhole(dst: str) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ip:
        try:
            ip.route("add", dst=dst, type="blackhole")
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: a concurrent run added it first
                raise


def remove_blackhole(dst: str) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ip:
        try:
            ip.route("del", dst=dst, type="blackhole")
        except NetlinkError as exc:
            if exc.code != 3:  # ESRCH: no such route
                raise


def clean_entries(entries: list[Entry], ledger: Ledger | None, report: CleanReport) -> None:
    """Remove ``entries`` in teardown order (reverse creation within each kind)."""
    ordered = sorted(enumerate(entries), key=lambda t: (_ORDER.get(t[1].kind, 9), -t[0]))
    for _, e in ordered:
        try:
            remove_entry(e, ledger.path if ledger is not None else None)
            report.removed.append(f"{e.kind} {e.name}")
            if ledger is not None:
                ledger.forget(e.kind, e.name)
        except Exception as exc:  # keep going: one stuck object must not strand the others
            report.failed.append(f"{e.kind} {e.name}: {exc}")
            logger.warning("could not remove %s %s: %s", e.kind, e.name, exc)


def clean(run_id: str | None = None, include_live: bool = False, sweep: bool = False) -> CleanReport:
    """Remove what dead runs (or run ``run_id``) left behind, as their ledgers record it.

    Parameters
    ----------
    run_id:
        Only this run's ledger. ``None``: every ledger whose owner process is gone.
    include_live:
        Also clean runs whose owner is still running.
    sweep:
        Afterwards remove every object with our name prefix, ledger or not (``testbed clean --all``):
        this also hits runs of other state directories, so it is never the default.
    """
    report = CleanReport()
    for path in all_ledgers():
        rid = path.stem
        if run_id is not None and rid != run_id:
            continue
        if not include_live and owner_alive(path) and path.stem != run_id:
            report.skipped_live_runs.append(rid)
            continue
        ledger = Ledger(rid, path.parent)
        clean_entries(read_pending(path), ledger, report)
        if not read_pending(path):
            path.unlink(missing_ok=True)
    if sweep and run_id is None:
        _sweep_prefix(report)
    return report


def _sweep_prefix(report: CleanReport) -> None:
    """Objects with our prefix that no ledger mentions (e.g. the ledger itself was lost)."""
    from testbed.emulation.cgroups import CgroupLeaf, cgroup_mode, list_leaves
    from testbed.emulation.netns import list_netns

    if os.geteuid() != 0:
        return
    mode = cgroup_mode()
    for d in sorted(list_leaves(PREFIX), key=len, reverse=True):
        try:
            CgroupLeaf(Path(d).name, mode, (d,)).remove()
            report.removed.append(f"cgroup {d}")
        except OSError as exc:
            report.failed.append(f"cgroup {d}: {exc}")
    for ns in list_netns(PREFIX):
        from testbed.emulation.netns import remove_netns

        try:
            remove_netns(ns)
            report.removed.append(f"netns {ns}")
        except OSError as exc:
            report.failed.append(f"netns {ns}: {exc}")
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        for link in ip.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith(VETH_PREFIX):
                ip.link("del", index=link["index"])
                report.removed.append(f"veth {name}")
    for dst in ("198.18.0.0/15",):
        if blackhole_present(dst):
            remove_blackhole(dst)
            report.removed.append(f"blackhole {dst}")


VETH_PREFIX = "tbv"  # host-side transient veth names: tbv<run6><idx><a|b>


def present_objects() -> list[str]:
    """Kernel objects with our name prefix that exist right now, whoever made them: namespaces, and as root
    cgroup leaves, host-side veths and the blackhole route (what the tests and ``testbed bench soak`` check)."""
    from testbed.emulation.netns import list_netns

    out = [f"netns {n}" for n in list_netns(PREFIX)]
    if os.geteuid() != 0:
        return out
    from pyroute2 import IPRoute

    from testbed.emulation.cgroups import list_leaves

    out += [f"cgroup {d}" for d in list_leaves(PREFIX)]
    with IPRoute() as ip:
        out += [f"veth {lk.get_attr('IFLA_IFNAME')}" for lk in ip.get_links()
                if (lk.get_attr("IFLA_IFNAME") or "").startswith(VETH_PREFIX)]
    if blackhole_present("198.18.0.0/15"):
        out.append("blackhole 198.18.0.0/15")
    return out
