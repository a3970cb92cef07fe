"""Rate shaping with tc through pyroute2: a TBF root qdisc on the sending end of each veth.

Measured on this machine kind (shared/reference/host-facts.md §2.3): TBF lands 3.8–4.3 % below
the configured rate at 10–100 Mbit, which is the TCP/IP header overhead (1448/1514); netem is
not in the kernel, so delay, jitter and loss are applied by the transport (``testbed.transport``).

Under time dilation ``k`` (``testbed.clock``) the TBF runs at the emulated rate / ``k`` of wall time, with the
bucket and queue of the emulated link in bytes (``tbf_params``). Dilated rates reach a few hundred bit/s, where
pyroute2's own TBF message is not enough: it sends only ``TCA_TBF_PARMS``, from which the kernel caps the bucket
at rate × 4.295 s and drops every full-size frame below 2.82 kbit/s (reference/time-dilation.md §3.3). Our TBF
messages also carry ``TCA_TBF_BURST`` (the bucket in bytes, as iproute2's ``tc`` sends it) and, above
2^32-1 bytes/s, ``TCA_TBF_RATE64``; they are exact down to ``min_wall_rate_bps``.
"""

from __future__ import annotations

import errno
import math
from functools import cache
from typing import Any

from testbed import clock
from testbed.config.models import LinkSpec
from testbed.emulation.netns import ipr

WIRE_MTU = 1514  # Ethernet frame bytes tc accounts per full-size packet
TCP_PAYLOAD = 1448  # payload bytes per full-size TCP segment (with timestamps)
HEADER_EFFICIENCY = TCP_PAYLOAD / WIRE_MTU  # 0.9564: goodput / rate for bulk TCP


GSO_MAX = 65536
U32_MAX = 0xFFFFFFFF
RTAB_MAX_SIZE = 2048  # the largest packet size in the rate table pyroute2 fills (256 cells of 8 B, mtu 1600)


def _ticks(rate_bytes: int, size: int) -> int:
    """Scheduler ticks that ``size`` bytes last at ``rate_bytes`` B/s, as pyroute2 computes them for the message."""
    from pyroute2.netlink.rtnl.tcmsg.common import calc_xmittime

    return int(calc_xmittime(rate_bytes, size))


@cache
def _min_rate_bytes(size: int) -> int:
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    r = max(1, math.ceil(size * 1e6 * float(tick_in_usec) / U32_MAX))
    while r > 1 and _ticks(r - 1, size) <= U32_MAX:
        r -= 1
    while _ticks(r, size) > U32_MAX:
        r += 1
    return r


def min_wall_rate_bps(burst_bytes: int) -> float:
    """The lowest wall rate in bit/s a TBF with a ``burst_bytes`` bucket can be programmed at.

    The message still carries the bucket as a time in 64 ns scheduler ticks, a u32 (``tc_tbf_qopt.buffer``,
    with the rate table beside it); below this rate that time passes 274.9 s and no longer fits: 96 bit/s
    (12 B/s: the kernel's rate is whole bytes/s) with the 3156 B bucket of every link below 12.6 Mbit/s
    (emulated). With ``TCA_TBF_BURST`` the
    kernel itself keeps the bucket in bytes and ns and would go lower, but a link that slow (one frame per
    two minutes of wall time) is far outside what the kernel's TCP timers tolerate anyway (§3.2).
    """
    return 8.0 * _min_rate_bytes(max(int(burst_bytes), RTAB_MAX_SIZE))


def _shape(rate_mbit: float, k: float) -> tuple[float, float, int, int, int]:
    """Emulated and wall rate in B/s, and GSO size, burst and limit in bytes (the rules of ``tbf_params``)."""
    emulated = rate_mbit * 1e6 / 8
    wall = emulated / k
    gso = GSO_MAX if wall * 0.002 >= GSO_MAX else 1500
    burst = max(int(emulated * 0.002), 2 * WIRE_MTU + 128, gso + WIRE_MTU if gso > 1500 else 0)
    limit = max(int(emulated * 0.05), 32 * WIRE_MTU) + burst
    return emulated, wall, gso, burst, limit


def check_rate(rate_mbit: float, dilation: float | None = None) -> float:
    """The wall rate in bit/s of an emulated ``rate_mbit`` link at time dilation ``dilation``
    (``None``: ``clock.dilation()``), or ValueError when a TBF cannot be programmed that slow.

    Call it for every link rate (and every rate a trace or scenario will step to) before building
    anything, to refuse a ``k`` that is too large; ``tbf_params`` and ``apply_rate`` raise the same error.
    """
    k = clock.check(clock.dilation() if dilation is None else dilation)
    if not (math.isfinite(rate_mbit) and rate_mbit > 0):
        raise ValueError(f"link rate must be a positive number of Mbit/s, got {rate_mbit!r}")
    emulated, wall, _, burst, _ = _shape(rate_mbit, k)
    floor = min_wall_rate_bps(burst)
    if wall * 8 < floor:
        k_max = emulated * 8 / floor
        raise ValueError(
            f"link rate {rate_mbit:g} Mbit/s at time_dilation {k:g} is {wall * 8:.4g} bit/s of wall time, below "
            f"the {floor:.4g} bit/s a TBF with its {burst} B bucket can be programmed at (the bucket time overflows "
            f"the kernel's 32-bit tick field); use a smaller time_dilation (at most {k_max:.4g} for this link)")
    return wall * 8


def tbf_params(rate_mbit: float, dilation: float = 1.0) -> dict[str, int]:
    """Wall rate (``rate``, bytes/s), bucket depth (``burst``), queue limit (``limit``, both bytes) and GSO size
    for a TBF that emulates a ``rate_mbit`` link at time dilation ``dilation`` (ValueError: ``check_rate``).

    The programmed rate is the emulated rate / ``dilation`` (rounded to the kernel's 1 B/s). Bucket and queue
    are the same bytes at every dilation, computed from the *emulated* rate: the bucket holds ~2 ms of emulated
    traffic (at least two frames) so short bursts do not exceed the rate measurably; the queue holds ~50 ms (at
    least 32 frames), which bounds queueing delay under load without starving TCP. (Taking them from the wall
    rate would shrink both ``dilation``-fold: at 400 bit/s a 50 ms queue holds 2.5 B and drops everything.)

    GSO: veth hands the qdisc super-packets of up to 64 KB (host-facts §2.3). Below the *wall* rate where 2 ms
    of wall traffic is 64 KB (262 Mbit/s: the bursts the kernel sees are in wall time) a super-packet would need
    a bucket far deeper than 2 ms, letting a 64 KB burst through at once, so GSO is capped at one MTU there.
    Above it, one-MTU packets cost too much CPU (462 Mbit/s measured at 1 Gbit), so GSO stays on, and the bucket
    holds a super-packet and a frame. At ``dilation`` >= 1 the emulated rate is then above 262 Mbit/s too and
    its 2 ms bucket about that deep anyway; at ``dilation`` < 1 the floor can make the bucket deeper than 2 ms
    of emulated time (up to 67 050 B).
    """
    check_rate(rate_mbit, dilation)
    _, wall, gso, burst, limit = _shape(rate_mbit, clock.check(dilation))
    # the floor holds two full frames with slack. A packet larger than the bucket is never sent: the qdisc
    # stalled for good when a rate step left a two-frame packet queued (found by `bench trace`). The slack
    # dates from pyroute2's bucket in timer ticks, rounded down (3028 became 3026 bytes at 10 Mbit); with
    # TCA_TBF_BURST the kernel now takes the bucket in bytes, exactly
    return {"rate": max(1, round(wall)), "burst": burst, "limit": limit, "gso_max_size": gso}


def apply_rate(ns: str, ifname: str, spec: LinkSpec, dilation: float | None = None) -> None:
    """Shape egress of ``ifname`` in netns ``ns`` to ``spec.rate_mbit`` of emulated time, i.e. the emulated rate
    / ``dilation`` of wall time (``None``: ``clock.dilation()``), with ``tbf_params`` (replaces any earlier
    shaping; ValueError, before anything changes, for a rate ``check_rate`` refuses).

    A change keeps the packets queued (the TBF is modified in place), except when GSO is switched off by it
    (a step from at least 262 Mbit/s of wall rate to below): super-packets of up to 64 KB may then be queued,
    larger than the new bucket, and a TBF never sends a packet larger than its bucket, so the link would stall
    until the rate went back up (found by a walk-away test: 300 -> 202 Mbit/s stalled a request for 8.5 s).
    The queue is flushed in that case, and TCP retransmits what it held; packets that arrive later are cut
    to one MTU by the TBF itself (it segments GSO packets larger than its bucket on enqueue).
    """
    p = tbf_params(spec.rate_mbit, clock.dilation() if dilation is None else dilation)
    with ipr(ns) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        (link,) = n.get_links(idx)
        gso_was = int(link.get_attr("IFLA_GSO_MAX_SIZE") or 0)
        n.link("set", index=idx, gso_max_size=p["gso_max_size"])
        # flush when queued super-packets would never fit the new bucket
        _replace_root(n, idx, "tbf", flush=gso_was > p["gso_max_size"], rate=p["rate"], burst=p["burst"],
                      limit=p["limit"])


@cache
def _tbf_msg_class() -> Any:
    """A pyroute2 ``tcmsg`` whose TBF options also know ``TCA_TBF_RATE64`` and ``TCA_TBF_BURST``.

    pyroute2 0.9's ``sched_tbf.options`` maps only UNSPEC, PARMS, RTAB and PTAB (attributes 0-3); the kernel's
    ``enum TCA_TBF_*`` goes on with RATE64 (4, u64), PRATE64 (5), BURST (6, u32), PBURST (7) and PAD (8).
    pyroute2 compiles an NLA map once per class and keeps it in class attributes a subclass would inherit, so
    both subclasses reset that cache to compile their own map.
    """
    from pyroute2.netlink.rtnl.tcmsg import tcmsg
    from pyroute2.netlink.rtnl.tcmsg.common import nla_plus_rtab
    from pyroute2.netlink.rtnl.tcmsg.sched_tbf import options as tbf_options

    fresh = {"_nlmsg_base__compiled_nla": False, "_nlmsg_base__t_nla_map": None,
             "_nlmsg_base__r_nla_map": None}

    options = type("tbf_options_burst", (nla_plus_rtab,), {
        **fresh,
        "nla_map": (
            ("TCA_TBF_UNSPEC", "none"),
            ("TCA_TBF_PARMS", "tbf_parms"),
            ("TCA_TBF_RTAB", "rtab"),
            ("TCA_TBF_PTAB", "ptab"),
            ("TCA_TBF_RATE64", "uint64"),
            ("TCA_TBF_PRATE64", "uint64"),
            ("TCA_TBF_BURST", "uint32"),
            ("TCA_TBF_PBURST", "uint32"),
            ("TCA_TBF_PAD", "hex"),
        ),
        "tbf_parms": tbf_options.tbf_parms,
    })

    def get_options(self: Any, *argv: Any, **kwarg: Any) -> Any:
        return options

    return type("tcmsg_tbf_burst", (tcmsg,), {**fresh, "get_options": staticmethod(get_options)})


def _tbf_message(command: str, idx: int, handle: int, rate: int, burst: int, limit: int) -> Any:
    """The RTM_NEWQDISC for a root TBF (``command``: "replace" or "add") as iproute2's ``tc`` builds it:
    ``TCA_TBF_PARMS`` and the rate table as pyroute2 builds them, plus ``TCA_TBF_BURST`` and, for rates above
    2^32-1 B/s, ``TCA_TBF_RATE64`` (the kernel takes the larger of it and the u32 rate in PARMS, which is then
    2^32-1). With ``TCA_TBF_BURST`` the kernel sets the bucket to ``burst`` bytes and its time from the rate
    in ns (``tbf_change``), instead of taking the time from PARMS in u32 ticks and capping it at 4.295 s."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_NEWQDISC, TC_H_ROOT
    from pyroute2.netlink.rtnl.tcmsg.common import get_rate_parameters

    if _ticks(min(rate, U32_MAX), max(burst, RTAB_MAX_SIZE)) > U32_MAX:  # tbf_params refuses these first
        raise ValueError(f"TBF rate {rate * 8} bit/s is too low for a {burst} B bucket (see check_rate)")
    parms = get_rate_parameters({"rate": min(rate, U32_MAX), "burst": burst, "limit": limit})
    attrs: list[list[Any]] = [["TCA_TBF_PARMS", parms], ["TCA_TBF_RTAB", True], ["TCA_TBF_BURST", burst]]
    if rate > U32_MAX:
        attrs.append(["TCA_TBF_RATE64", rate])
    msg = _tbf_msg_class()()
    msg["family"] = 0
    msg["index"] = idx
    msg["handle"] = handle
    msg["parent"] = TC_H_ROOT
    msg["info"] = 0
    msg["attrs"] = [["TCA_KIND", "tbf"], ["TCA_OPTIONS", {"attrs": attrs}]]
    msg["header"]["type"] = RTM_NEWQDISC
    msg["header"]["flags"] = (NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
                              | (NLM_F_REPLACE if command == "replace" else NLM_F_EXCL))
    return msg


def _tbf_request(n: Any, command: str, idx: int, handle: int, rate: int, burst: int, limit: int) -> None:
    """Send ``_tbf_message`` on the IPRoute ``n``; NetlinkError when the kernel refuses it."""
    # the sync IPRoute's nlm_request fails in pyroute2 0.9.7 (KeyError 'nlm_generator'); a batch of one waits
    # for the ACK and raises NetlinkError on a refusal
    list(n.nlm_request_batch([_tbf_message(command, idx, handle, rate, burst, limit)]))


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
    A TBF goes through ``_tbf_request`` (with ``TCA_TBF_BURST``), anything else through pyroute2's ``tc``.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    def put(command: str, handle: int) -> None:
        if kind == "tbf":
            _tbf_request(n, command, idx, handle, **kw)
        else:
            n.tc(command, kind, idx, handle, **kw)

    cur_kind, cur_handle = _root(n, idx)
    ours = cur_handle in (0x10000, 0x20000)
    if cur_kind == kind and ours and not flush:
        put("replace", cur_handle)
        return
    handle = 0x20000 if cur_handle == 0x10000 else 0x10000
    try:
        put("replace", handle)
    except NetlinkError as e:  # a kernel that will not graft over a root of another kind
        if e.code != errno.EINVAL:
            raise
        n.tc("del", index=idx, root=True)
        put("add", handle)


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
