"""Network namespaces, veth pairs, addresses and routes through pyroute2, plus ``in_netns``.

``in_netns`` switches only the calling thread (``setns(2)`` is per thread), which keeps Ray's own
threads in the host namespace; a socket stays in the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the body with the calling thread in netns ``name`` (``None``: stay where we are)."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        tgt = os.open(NETNS_DIR / name, os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise OSError(errno.ENOENT, f"network namespace {name!r} does not exist") from None
    try:
        if _libc.setns(tgt, CLONE_NEWNET):
            e = ctypes.get_errno()
            raise OSError(e, f"setns({name}): {os.strerror(e)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET):  # pragma: no cover - restoring our own netns cannot fail
                raise OSError(ctypes.get_errno(), "setns back to the original namespace failed")
    finally:
        os.close(own)
        os.close(tgt)


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_netns(prefix: str = "") -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


_MS_BIND = 4096
_MNT_DETACH = 2


def _thread_do(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a fresh thread (so namespace changes never touch the caller) and re-raise its error."""
    err: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            err.append(exc)

    t = threading.Thread(target=body, name="tb-netns")
    t.start()
    t.join()
    if err:
        raise err[0]


def create_netns(name: str) -> None:
    """Create a named namespace (as ``ip netns add`` does), with ``lo`` up and IPv4 forwarding on.

    Done without forking: a short-lived thread unshares its network namespace and bind-mounts it
    at /var/run/netns/NAME (forking a process that runs Ray threads can deadlock the child).
    """
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    path = NETNS_DIR / name
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)

    def make() -> None:
        if _libc.unshare(CLONE_NEWNET):
            e = ctypes.get_errno()
            raise OSError(e, f"unshare(CLONE_NEWNET): {os.strerror(e)}")
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _libc.mount(src, str(path).encode(), None, _MS_BIND, None):
            e = ctypes.get_errno()
            raise OSError(e, f"bind mount of the new namespace on {path}: {os.strerror(e)}")

    try:
        _thread_do(make)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    _init_netns(name)


def attach_netns(name: str, pid: int) -> None:
    """Name the network namespace of process ``pid`` (as ``ip netns attach`` does): a Mininet host's, say.

    The namespace lives as long as that process or this name; ``remove_netns`` drops the name only.
    """
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    path = NETNS_DIR / name
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    if _libc.mount(f"/proc/{pid}/ns/net".encode(), str(path).encode(), None, _MS_BIND, None):
        e = ctypes.get_errno()
        path.unlink(missing_ok=True)
        raise OSError(e, f"bind mount of /proc/{pid}/ns/net on {path}: {os.strerror(e)}")
    _init_netns(name)


def _init_netns(name: str) -> None:
    """``lo`` up and IPv4 forwarding on (nodes route for each other)."""
    with ipr(name) as ns:
        idx = ns.link_lookup(ifname="lo")[0]
        ns.link("set", index=idx, state="up")
    with in_netns(name):
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def remove_netns(name: str) -> None:
    """Delete a named namespace (its veths and ifbs go with it); a missing one is fine."""
    path = NETNS_DIR / name
    if not path.exists():
        return
    if _libc.umount2(str(path).encode(), _MNT_DETACH):
        e = ctypes.get_errno()
        if e not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (half-made)
            raise OSError(e, f"umount {path}: {os.strerror(e)}")
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def ipr(ns: str | None) -> Iterator[Any]:
    """A pyroute2 ``IPRoute`` whose netlink socket lives in namespace ``ns`` (created from this thread)."""
    from pyroute2 import IPRoute

    with in_netns(ns):
        ip = IPRoute()
    try:
        yield ip
    finally:
        ip.close()


def create_veth(host_a: str, host_b: str, ns_a: str, ns_b: str, name_a: str, name_b: str,
                addr_a: str, addr_b: str, prefixlen: int) -> None:
    """Create a veth pair with ends ``name_a`` in ``ns_a`` and ``name_b`` in ``ns_b``, addressed and up (IPv4 only).

    ``host_a``/``host_b`` are the transient, unique names the ends carry in the host namespace
    before they move (interface names in the host namespace must not collide across runs).
    """
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        ip.link("add", ifname=host_a, kind="veth", peer=host_b)
        for host, ns in ((host_a, ns_a), (host_b, ns_b)):
            idx = ip.link_lookup(ifname=host)[0]
            ip.link("set", index=idx, net_ns_fd=ns)
    for host, ns, final, addr in ((host_a, ns_a, name_a, addr_a), (host_b, ns_b, name_b, addr_b)):
        setup_interface(ns, host, final, [addr], prefixlen)
    pin_neighbours(ns_a, name_a, addr_a, ns_b, name_b, addr_b)


NUD_PERMANENT = 0x80


def pin_neighbours(ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str) -> None:
    """Permanent ARP entries both ways across one link, so that no ARP packet ever shares the shaped link.

    ARP runs on wall-clock timers (an entry goes stale after about 30 s and is probed 1 s apart). Under time
    dilation a probe waits behind the data in the link's queue for ``k`` times longer, the probes time out, and the
    link stalls until the neighbour is resolved again: at 0.1 Mbit/s emulated and ``k`` = 50 one message in six
    arrived 26 s late, and goodput measured -30 %. Both ends of a link are ours, so their addresses are known."""
    macs = {}
    for ns, ifname in ((ns_a, if_a), (ns_b, if_b)):
        with ipr(ns) as n:
            macs[ns] = n.get_links(n.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")
    for ns, ifname, peer_ns, peer_addr in ((ns_a, if_a, ns_b, addr_b), (ns_b, if_b, ns_a, addr_a)):
        with ipr(ns) as n:
            n.neigh("replace", dst=peer_addr, lladdr=macs[peer_ns], ifindex=n.link_lookup(ifname=ifname)[0],
                    state=NUD_PERMANENT)


def disable_ipv6(ns: str, ifname: str) -> None:
    """Turn IPv6 off on ``ifname`` in ``ns`` (``net.ipv6.conf.IFNAME.disable_ipv6 = 1``); a kernel without IPv6 is fine.

    The emulation is IPv4 only, and an IPv6 interface sends router solicitations, MLD reports and DAD probes
    on its own. They come per *wall* second, so under time dilation ``k`` they take ``k`` times their share of
    an emulated link: on a 400 bit/s (dilated) link they added 2.8 s to a 32 s transfer
    (reference/time-dilation.md §3.3). ``lo`` keeps IPv6 (nothing of it leaves the namespace).
    """
    with in_netns(ns):
        conf = Path("/proc/sys/net/ipv6/conf") / ifname / "disable_ipv6"
        try:
            conf.write_text("1\n")
        except FileNotFoundError:
            if Path("/proc/sys/net/ipv6").exists():  # IPv6 is there, the interface is not
                raise OSError(errno.ENODEV, f"no interface {ifname} in namespace {ns}") from None


def setup_interface(ns: str, ifname: str, final: str | None, addrs: list[str], prefixlen: int) -> None:
    """Rename ``ifname`` in ``ns`` to ``final`` (if given), turn its IPv6 off (``disable_ipv6``), give it
    ``addrs`` and bring it up."""
    with ipr(ns) as n:
        found = n.link_lookup(ifname=ifname)
        if not found:
            raise OSError(errno.ENODEV, f"no interface {ifname} in namespace {ns}")
        idx = found[0]
        if final and final != ifname:
            n.link("set", index=idx, state="down")
            n.link("set", index=idx, ifname=final)
        disable_ipv6(ns, final or ifname)  # before it comes up: not one solicitation on the link
        for addr in addrs:
            n.addr("add", index=idx, address=addr, prefixlen=prefixlen)
        n.link("set", index=idx, state="up")


def add_node_address(ns: str, address: str) -> None:
    """Give the node its own /32 on ``lo``: the address its sockets bind to."""
    with ipr(ns) as n:
        idx = n.link_lookup(ifname="lo")[0]
        n.addr("add", index=idx, address=address, prefixlen=32)


TCP_RTO_MIN_US = 200_000  # Linux's default minimum retransmission timeout (TCP_RTO_MIN, HZ/5)


def dilate_tcp_timers(ns: str, k: float) -> int | None:
    """Stretch TCP's minimum retransmission timeout in ``ns`` by the run's time dilation ``k``
    (``net.ipv4.tcp_rto_min_us``, a per-namespace setting since Linux 6.11), capped at the namespace's maximum RTO.

    A packet the kernel backend drops (a full TBF queue) is then recovered after 200 ms of *emulated* time, as on
    the emulated link, not after 200 ms of wall time (200/k ms emulated). Returns the value set, or None where the
    kernel lacks the setting (its TCP then keeps wall-time timers, as the manifest says). The initial RTO (1 s)
    and the delayed-ACK timers have no such setting and stay on wall time. (It is not what fixed goodput at
    kbit/s wall rates: that was ARP, see ``pin_neighbours``; with the stretch alone it stayed at -30 %.)"""
    with in_netns(ns):
        f = Path("/proc/sys/net/ipv4/tcp_rto_min_us")
        if not f.exists():
            return None
        cap = Path("/proc/sys/net/ipv4/tcp_rto_max_ms")
        cap_us = int(cap.read_text()) * 1000 if cap.exists() else 120_000_000
        us = max(1, min(round(TCP_RTO_MIN_US * k), cap_us))
        f.write_text(f"{us}\n")
        return us


def add_route(ns: str, dst: str, gateway: str, src: str | None = None) -> None:
    with ipr(ns) as n:
        kw = {"dst": dst, "gateway": gateway}
        if src:
            kw["prefsrc"] = src
        n.route("add", **kw)
