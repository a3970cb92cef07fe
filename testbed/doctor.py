"""What this host supports, and which backends ``auto`` picks (with the reason for each)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Capability:
    name: str
    ok: bool
    detail: str


def _probe_netns() -> Capability:
    if os.geteuid() != 0:
        return Capability("netns", False, "not root: named network namespaces need CAP_SYS_ADMIN")
    try:
        from testbed.emulation.netns import create_netns, remove_netns

        name = f"tb-doctor-{os.getpid()}"
        create_netns(name)
        remove_netns(name)
        return Capability("netns", True, "created and removed a named namespace")
    except Exception as exc:
        return Capability("netns", False, f"could not create a namespace: {exc}")


def _probe_qdiscs() -> list[Capability]:
    """Try tbf and netem on a veth in a scratch namespace pair."""
    if os.geteuid() != 0:
        return [Capability("tc-tbf", False, "not root"), Capability("tc-netem", False, "not root")]
    from testbed.emulation.netns import create_netns, create_veth, ipr, remove_netns

    a, b = f"tb-doc-a{os.getpid()}", f"tb-doc-b{os.getpid()}"
    out = []
    try:
        create_netns(a)
        create_netns(b)
        create_veth(f"tbvdoc{os.getpid() % 10000}a", f"tbvdoc{os.getpid() % 10000}b", a, b, "d0", "d0",
                    "198.18.255.1", "198.18.255.2", 30)
        with ipr(a) as ns:
            idx = ns.link_lookup(ifname="d0")[0]
            for kind, kw in (("tbf", {"rate": 1_000_000, "burst": 3028, "limit": 50_000}),
                             ("netem", {"delay": 10_000})):
                try:
                    ns.tc("replace", kind, idx, 0x10000, **kw)
                    out.append(Capability(f"tc-{kind}", True, f"{kind} qdisc accepted"))
                except Exception as exc:
                    out.append(Capability(f"tc-{kind}", False, f"{kind} qdisc refused: {exc}"))
    except Exception as exc:
        out.append(Capability("tc-tbf", False, f"probe failed: {exc}"))
    finally:
        remove_netns(a)
        remove_netns(b)
    return out


def _probe_cgroup() -> Capability:
    from testbed.emulation.cgroups import cgroup_mode

    mode = cgroup_mode()
    if mode == "none":
        return Capability("cgroup", False, "no cgroup v1 cpu+memory or v2 cpu,memory controllers")
    if os.geteuid() != 0:
        return Capability("cgroup", False, f"cgroup {mode} present but not root")
    return Capability("cgroup", True, f"cgroup {mode}: CFS quota and memory limit")


def probe() -> list[Capability]:
    """Probe the host (creates and removes scratch namespaces when root)."""
    caps = [Capability("root", os.geteuid() == 0, f"euid {os.geteuid()}"), _probe_netns(), *_probe_qdiscs(),
            _probe_cgroup(),
            Capability("iproute2", shutil.which("ip") is not None, shutil.which("ip") or "ip not found (optional)"),
            *_probe_mininet()]
    return caps


def _probe_mininet() -> list[Capability]:
    """The optional Mininet backends: wired Mininet (Debian's package) and mininet-wifi (the Vagrant VM)."""
    from testbed.emulation.mnbackend import find_mininet, hwsim_available

    out = []
    py, why = find_mininet(wifi=False)
    out.append(Capability("mininet", py is not None, why if py else
                          f"links: mininet unavailable ({why}); apt-get install --no-install-recommends mininet"))
    py, why = find_mininet(wifi=True)
    ok, hw = hwsim_available()
    detail = f"{why}; {hw}"
    if py is None or not ok:
        detail = f"links: mininet-wifi unavailable ({detail}); run in the project's Vagrant VM (vagrant up)"
    out.append(Capability("mininet-wifi", py is not None and ok, detail))
    return out


def choose_backends(links: str, compute: str, caps: list[Capability] | None = None) -> tuple[str, str, list[str]]:
    """Resolve ``auto`` into concrete backends; returns (links, compute, reasons)."""
    reasons = []
    if links == "auto" or compute == "auto":
        caps = caps if caps is not None else quick_probe()
    have = {c.name: c for c in caps or []}
    if links == "auto":
        ok = have.get("netns") and have["netns"].ok
        links = "kernel" if ok else "userspace"
        reasons.append(f"links: {links} ({have['netns'].detail if 'netns' in have else 'no probe'})")
    if compute == "auto":
        ok = have.get("cgroup") and have["cgroup"].ok
        compute = "cgroup" if ok else "dilation"
        reasons.append(f"compute: {compute} ({have['cgroup'].detail if 'cgroup' in have else 'no probe'})")
    return links, compute, reasons


def quick_probe() -> list[Capability]:
    """A cheap probe for backend choice (no scratch objects)."""
    from testbed.emulation.cgroups import cgroup_mode

    root = os.geteuid() == 0
    netns_ok = root and os.access("/var/run", os.W_OK)
    mode = cgroup_mode()
    return [Capability("netns", bool(netns_ok), "root and /var/run writable" if netns_ok else "needs root"),
            Capability("cgroup", root and mode != "none", f"cgroup {mode}" + ("" if root else ", not root"))]
