"""Rate shaping with tc through pyroute2: a TBF root qdisc on the sending end of each veth.

Measured on this machine kind (shared/reference/host-facts.md §2.3): TBF lands 3.8–4.3 % below
the configured rate at 10–100 Mbit, which is the TCP/IP header overhead (1448/1514); netem is
not in the kernel, so delay, jitter and loss are applied by the transport (``testbed.transport``).
"""

from __future__ import annotations

from testbed.config.models import LinkSpec

WIRE_MTU = 1514  # Ethernet frame bytes tc accounts per full-size packet
TCP_PAYLOAD = 1448  # payload bytes per full-size TCP segment (with timestamps)
HEADER_EFFICIENCY = TCP_PAYLOAD / WIRE_MTU  # 0.9564: goodput / rate for bulk TCP


def tbf_params(rate_mbit: float) -> dict[str, int]:
    """Bucket depth and queue limit for a TBF at ``rate_mbit``.

    The bucket holds ~2 ms of traffic (at least two frames) so short bursts do not exceed the
    rate measurably; the queue holds ~50 ms (at least 32 frames), which bounds queueing delay
    under load without starving TCP (GSO is capped to one MTU on our veths, see ``netns``).
    """
    rate_bps = rate_mbit * 1e6 / 8
    burst = max(int(rate_bps * 0.002), 2 * WIRE_MTU)
    limit = max(int(rate_bps * 0.05), 32 * WIRE_MTU) + burst
    return {"rate": int(rate_bps), "burst": burst, "limit": limit}


def apply_rate(ns: str, ifname: str, spec: LinkSpec) -> None:
    """Shape egress of ``ifname`` in netns ``ns`` to ``spec.rate_mbit`` (replaces any earlier shaping)."""
    from pyroute2 import NetNS

    p = tbf_params(spec.rate_mbit)
    with NetNS(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        n.tc("replace", "tbf", idx, 0x10000, rate=p["rate"], burst=p["burst"], limit=p["limit"])


def show_qdisc(ns: str, ifname: str) -> str:
    """The kind of root qdisc on ``ifname`` (e.g. 'tbf'), for tests and ``doctor``."""
    from pyroute2 import NetNS

    with NetNS(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        for q in n.get_qdiscs(index=idx):
            if q.get("parent") == 0xFFFFFFFF:
                return str(q.get_attr("TCA_KIND"))
    return ""
