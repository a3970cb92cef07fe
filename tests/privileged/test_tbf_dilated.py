"""TBF under time dilation: bytes of bucket and queue kept, rate / k, and exact at a 2 kbit/s wall rate.

The kernel test is root only; the ``tbf_params`` / ``check_rate`` / message checks need no root (reference:
shared/reference/time-dilation.md §2.2, §3.3).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from testbed import clock
from testbed.config.models import LinkSpec
from testbed.emulation import tc
from testbed.lifecycle.cleanup import CleanReport, clean_entries
from testbed.lifecycle.ledger import Ledger

RATES_MBIT = (0.02, 0.1, 1.0, 10.0, 100.0, 300.0, 1000.0, 20_000.0)


@pytest.mark.parametrize("rate", RATES_MBIT)
def test_bucket_and_queue_bytes_do_not_depend_on_dilation(rate: float) -> None:
    base = tc.tbf_params(rate)
    for k in (1.0, 10.0, 50.0):
        p = tc.tbf_params(rate, k)
        # Assert: same bytes, the wall rate is the emulated rate / k, GSO from the wall rate
        assert (p["burst"], p["limit"]) == (base["burst"], base["limit"]), (rate, k)
        assert p["rate"] == round(rate * 1e6 / 8 / k)
        assert p["gso_max_size"] == (tc.GSO_MAX if rate * 1e6 / 8 / k * 0.002 >= tc.GSO_MAX else 1500)


def test_gso_follows_the_wall_rate_and_the_bucket_floor_holds() -> None:
    # 1 Gbit/s: GSO on at k=1, off at k=50 (20 Mbit/s of wall rate); 20 Gbit/s at k=50 is 400 Mbit/s: on
    assert tc.tbf_params(1000.0)["gso_max_size"] == tc.GSO_MAX
    assert tc.tbf_params(1000.0, 50)["gso_max_size"] == 1500
    assert tc.tbf_params(20_000.0, 50)["gso_max_size"] == tc.GSO_MAX
    # k < 1: 200 Mbit/s emulated is 400 Mbit/s of wall rate, GSO on; the bucket must hold a super-packet
    assert tc.tbf_params(200.0, 0.5)["gso_max_size"] == tc.GSO_MAX
    for rate in RATES_MBIT + (200.0, 262.0, 263.0):
        for k in (0.5, 1.0, 10.0, 50.0):
            p = tc.tbf_params(rate, k)
            assert p["burst"] >= 2 * tc.WIRE_MTU + 128  # at least one full frame, with slack
            if p["gso_max_size"] > 1500:
                assert p["burst"] >= p["gso_max_size"] + tc.WIRE_MTU, (rate, k, p)
            assert p["limit"] >= p["burst"] + 32 * tc.WIRE_MTU
    # k = 1 is what it always was
    assert tc.tbf_params(10.0) == {"rate": 1_250_000, "burst": 3156, "limit": 65_656, "gso_max_size": 1500}


def test_too_low_a_wall_rate_is_refused_with_the_fix() -> None:
    floor = tc.min_wall_rate_bps(3156)
    assert 90 <= floor <= 100  # the u32 tick field holds 274.9 s of bucket time
    assert tc.check_rate(0.02, 200) == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"0\.02 Mbit/s at time_dilation 250 .*smaller time_dilation"):
        tc.check_rate(0.02, 250)
    with pytest.raises(ValueError, match="time_dilation"):
        tc.tbf_params(0.02, 250)
    with clock.dilated(250):
        with pytest.raises(ValueError):
            tc.check_rate(0.02)  # None: this process's k
        tc.check_rate(1.0)


def test_tbf_message_carries_the_burst_and_rate64() -> None:
    cls = tc._tbf_msg_class()
    for rate, rate64 in ((250, None), (2**32 - 1, None), (12_500_000_000, 12_500_000_000)):
        msg = tc._tbf_message("replace", 7, 0x10000, rate, 3156, 51_604)
        msg.encode()
        back = cls(msg.data)
        back.decode()
        opts = back.get_attr("TCA_OPTIONS")
        assert back.get_attr("TCA_KIND") == "tbf"
        assert opts.get_attr("TCA_TBF_BURST") == 3156
        assert opts.get_attr("TCA_TBF_RATE64") == rate64
        assert opts.get_attr("TCA_TBF_PARMS")["rate"] == min(rate, 2**32 - 1)
        assert opts.get_attr("TCA_TBF_PARMS")["limit"] == 51_604


@pytest.mark.privileged("tc on a veth pair")
def test_tbf_is_exact_at_two_kbit_per_second_of_wall_time() -> None:
    """20 kbit/s emulated at k = 10: 2 kbit/s of wall rate, where pyroute2's plain TBF delivered nothing."""
    from testbed.emulation.netns import create_netns, create_veth, in_netns, ipr

    tag = f"tbfd{os.getpid() % 100000}"
    ns_a, ns_b = f"tb-{tag}-a", f"tb-{tag}-b"
    addr_a, addr_b = "198.18.250.1", "198.18.250.2"
    segments = 4
    ledger = Ledger(tag)
    report = CleanReport()
    srv: socket.socket | None = None
    cli: socket.socket | None = None
    arrivals: list[tuple[float, int]] = []
    try:
        # Prepare: two namespaces and a veth, a TBF on a's end (b's end is unshaped: its ACKs go freely)
        for ns in (ns_a, ns_b):
            ledger.record("netns", ns)
            create_netns(ns)
        host_a = f"tbv{os.getpid() % 100000}da"
        ledger.record("veth", host_a)
        create_veth(host_a, f"tbv{os.getpid() % 100000}db", ns_a, ns_b, "t0", "t0", addr_a, addr_b, 30)
        ledger.forget("veth", host_a)  # moved into the namespaces: goes with them
        for ns in (ns_a, ns_b):
            with in_netns(ns):
                assert Path("/proc/sys/net/ipv6/conf/t0/disable_ipv6").read_text().strip() == "1"
        for ns, peer in ((ns_a, addr_b), (ns_b, addr_a)):  # create_veth pins ARP: none shares the shaped link
            with ipr(ns) as n:
                (nb,) = [x for x in n.get_neighbours(dst=peer)]
                assert nb["state"] == 0x80  # NUD_PERMANENT
        with clock.dilated(10):
            tc.apply_rate(ns_a, "t0", LinkSpec(rate_mbit=0.02))
        p = tc.tbf_params(0.02, 10)
        wall_rate = p["rate"]  # bytes/s
        assert wall_rate == 250
        with in_netns(ns_b):
            srv = socket.socket()
            srv.bind((addr_b, 0))
            srv.listen(1)
        srv.settimeout(30)
        port = srv.getsockname()[1]

        def receive() -> None:
            assert srv is not None
            conn, _ = srv.accept()
            conn.settimeout(30)
            got = 0
            with conn:
                while chunk := conn.recv(65536):
                    got += len(chunk)
                    arrivals.append((time.monotonic(), got))

        rx = threading.Thread(target=receive, daemon=True)
        rx.start()
        with in_netns(ns_a):
            cli = socket.socket()
            cli.bind((addr_a, 0))
        cli.settimeout(30)
        # Execute: a few full-size segments
        cli.connect((addr_b, port))
        mss = cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        cli.sendall(b"x" * (segments * mss))
        cli.close()
        rx.join(40)
        assert not rx.is_alive(), "the transfer did not finish"
        # Assert: everything arrived, one segment per wake-up
        assert arrivals and arrivals[-1][1] == segments * mss, arrivals
        at = {got: t for t, got in arrivals}
        assert all(k * mss in at for k in range(1, segments + 1)), arrivals
        # From the second segment on the bucket is empty and the link runs at the wall rate exactly:
        # (segments - 2) full frames of 1514 B between the 2nd and the last segment
        expected = (segments - 2) * tc.WIRE_MTU / wall_rate
        measured = at[segments * mss] - at[2 * mss]
        # the whole transfer, first to last segment: the bucket (burst less the SYN and the handshake ACK,
        # 74 + 66 B) let the first segment and most of the second through at once
        expected_all = (segments * tc.WIRE_MTU - (p["burst"] - 74 - 66)) / wall_rate
        measured_all = at[segments * mss] - at[mss]
        print(f"wall rate {wall_rate * 8} bit/s: 2nd->last {measured:.3f} s (expected {expected:.3f}), "
              f"1st->last {measured_all:.3f} s (expected {expected_all:.3f})")
        assert abs(measured / expected - 1) < 0.05, (measured, expected)
        assert abs(measured_all / expected_all - 1) < 0.05, (measured_all, expected_all)
        with ipr(ns_a) as n:
            (q,) = [q for q in n.get_qdiscs(index=n.link_lookup(ifname="t0")[0]) if q.get("parent") == 0xFFFFFFFF]
            assert q.get_attr("TCA_STATS")["drop"] == 0
    finally:
        for s in (cli, srv):
            if s is not None:
                s.close()
        clean_entries(ledger.pending(), ledger, report)
        ledger.close()
    assert not report.failed, report.failed
    assert not ledger.path.exists()


@pytest.mark.privileged("a network namespace")
def test_tcp_minimum_rto_is_stretched_in_the_namespace_only() -> None:
    """Under dilation k each node namespace's TCP minimum RTO is 200 ms x k (capped at its maximum RTO); the
    host's own is untouched."""
    from testbed.emulation.netns import TCP_RTO_MIN_US, create_netns, dilate_tcp_timers, in_netns

    host = Path("/proc/sys/net/ipv4/tcp_rto_min_us")
    if not host.exists():
        pytest.skip("this kernel has no net.ipv4.tcp_rto_min_us (Linux < 6.11): TCP's timers stay on wall time")
    before = host.read_text()
    ns = f"tb-rto{os.getpid() % 100000}"
    ledger = Ledger(f"rto{os.getpid() % 100000}")
    report = CleanReport()
    try:
        ledger.record("netns", ns)
        create_netns(ns)
        assert dilate_tcp_timers(ns, 50) == 50 * TCP_RTO_MIN_US
        with in_netns(ns):
            assert int(host.read_text()) == 50 * TCP_RTO_MIN_US
            cap_us = int(Path("/proc/sys/net/ipv4/tcp_rto_max_ms").read_text()) * 1000
        assert dilate_tcp_timers(ns, 10_000) == cap_us  # never past the largest RTO the namespace allows
        assert host.read_text() == before
    finally:
        clean_entries(ledger.pending(), ledger, report)
        ledger.close()
    assert not report.failed, report.failed
