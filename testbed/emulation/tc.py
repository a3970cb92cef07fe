"""Rate shaping with tc through pyroute2: a TBF root qdisc on the sending end of each veth.

Measured on this machine kind (shared/reference/host-facts.md §2.3): TBF lands 3.8–4.3 % below
the configured rate at 10–100 Mbit, which is the TCP/IP header overhead (1448/1514); netem is
not in the kernel, so delay, jitter and loss are applied by the transport (``testbed.transport``).
"""

from __future__ import annotations

import errno
from typing import Any

from testbed.config.models import LinkSpec
from testbed.emulation.netns import ipr

WIRE_MTU = 1514  # Ethernet frame bytes tc accounts per full-size packet
TCP_PAYLOAD = 1448  # payload bytes per full-size TCP segment (with timestamps)
HEADER_EFFICIENCY = TCP_PAYLOAD / WIRE_MTU  # 0.9564: goodput / rate for bulk TCP


GSO_MAX = 65536


def tbf_params(rate_mbit: float) -> dict[str, int]:
    """Bucket depth, queue limit and GSO size for a TBF at ``rate_mbit``.

    The bucket holds ~2 ms of traffic (at least two frames) so short bursts do not exceed the
    rate measurably; the queue holds ~50 ms (at least 32 frames), which bounds queueing delay
    under load without starving TCP.

    GSO: veth hands the qdisc super-packets of up to 64 KB (host-facts §2.3). Below the rate
    where 2 ms of traffic is 64 KB (262 Mbit/s) a super-packet would need a bucket far deeper
    than 2 ms, letting a 64 KB burst through at once, so GSO is capped at one MTU there. Above it,
    one-MTU packets cost too much CPU (462 Mbit/s measured at 1 Gbit), so GSO stays on.
    """
    rate_bps = rate_mbit * 1e6 / 8
    gso = GSO_MAX if rate_bps * 0.002 >= GSO_MAX else 1500
    # the floor holds two full frames with slack: pyroute2 stores the bucket in timer ticks and rounds it
    # down (3028 became 3026 bytes at 10 Mbit), and a packet larger than the bucket is never sent: the
    # qdisc stalled for good when a rate step left a two-frame packet queued (found by `bench trace`)
    burst = max(int(rate_bps * 0.002), 2 * WIRE_MTU + 128, gso + WIRE_MTU if gso > 1500 else 0)
    limit = max(int(rate_bps * 0.05), 32 * WIRE_MTU) + burst
    return {"rate": int(rate_bps), "burst": burst, "limit": limit, "gso_max_size": gso}


def apply_rate(ns: str, ifname: str, spec: LinkSpec) -> None:
    """Shape egress of ``ifname`` in netns ``ns`` to ``spec.rate_mbit`` (replaces any earlier shaping).

    A change keeps the packets queued (the TBF is modified in place), except when GSO is switched off by it
    (a step from at least 262 Mbit/s to below): super-packets of up to 64 KB may then be queued, larger
    than the new bucket, and a TBF never sends a packet larger than its bucket, so the link would stall
    until the rate went back up (found by a walk-away test: 300 -> 202 Mbit/s stalled a request for 8.5 s).
    The queue is flushed in that case, and TCP retransmits what it held; packets that arrive later are cut
    to one MTU by the TBF itself (it segments GSO packets larger than its bucket on enqueue).
    """
    p = tbf_params(spec.rate_mbit)
    with ipr(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        (link,) = n.get_links(idx)
        gso_was = int(link.get_attr("IFLA_GSO_MAX_SIZE") or 0)
        n.link("set", index=idx, gso_max_size=p["gso_max_size"])
        # flush when queued super-packets would never fit the new bucket
        _replace_root(n, idx, "tbf", flush=gso_was > p["gso_max_size"], rate=p["rate"], burst=p["burst"],
                      limit=p["limit"])


def _root(n: Any, idx: int) -> tuple[str, int]:
    """The kind and handle of the root qdisc on ``idx`` ("", 0 when there is none of ours)."""
    for q in n.get_qdiscs(index=idx):
        if q.get("parent") == 0xFFFFFFFF:
            return str(q.get_attr("TCA_KIND")), int(q.get("handle"))
    return "", 0


def _replace_root(n: Any, idx: int, kind: str, flush: bool = False, **kw: Any) -> None:
    """Put a ``kind`` root qdisc on ``idx``.

    A root of the same kind is changed in place, keeping its queue, unless ``flush``. Otherwise a new qdisc
    is grafted in its place under the other of our two handles (1: and 2:), in one step. The old queue goes
    with the old qdisc, and the link is never left without a qdisc (a veth without one sends at memory speed).
    """
    from pyroute2.netlink.exceptions import NetlinkError

    cur_kind, cur_handle = _root(n, idx)
    ours = cur_handle in (0x10000, 0x20000)
    if cur_kind == kind and ours and not flush:
        n.tc("replace", kind, idx, cur_handle, **kw)
        return
    handle = 0x20000 if cur_handle == 0x10000 else 0x10000
    try:
        n.tc("replace", kind, idx, handle, **kw)
    except NetlinkError as e:  # a kernel that will not graft over a root of another kind
        if e.code != errno.EINVAL:
            raise
        n.tc("del", index=idx, root=True)
        n.tc("add", kind, idx, handle, **kw)


def block(ns: str, ifname: str) -> None:
    """Drop every packet leaving ``ifname`` (a link that is down): a pfifo that holds nothing."""
    with ipr(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        _replace_root(n, idx, "pfifo", limit=0)


def unshape(ns: str, ifname: str) -> None:
    """Remove our root qdisc from ``ifname`` (back to the default)."""
    with ipr(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        n.tc("del", index=idx, root=True)


def show_qdisc(ns: str, ifname: str) -> str:
    """The kind of root qdisc on ``ifname`` (e.g. 'tbf'), for tests and ``doctor``."""
    with ipr(ns) as n:
        return _root(n, n.link_lookup(ifname=ifname)[0])[0]
