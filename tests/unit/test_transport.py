"""The transport over loopback (no root): framing, replies, delay hold, order under jitter, loss, pacing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from testbed.transport import Endpoint, Message, PathModel, TokenBucket, wire_bytes


@pytest.fixture
def pair() -> Iterator[tuple[Endpoint, Endpoint, list[Message]]]:
    got: list[Message] = []

    def handler(m: Message) -> tuple[str, np.ndarray | None, dict[str, object]] | None:
        got.append(m)
        if m.kind == "double":
            assert m.array is not None
            return "result", m.array * 2, {"n": m.meta["n"]}
        return None

    a, b = Endpoint("a", "127.0.0.1", None, seed=1), Endpoint("b", "127.0.0.1", None, handler=handler, seed=2)
    pa, pb = a.start(), b.start()
    a.set_peers({"b": ("127.0.0.1", pb)}, {"b": PathModel()})
    b.set_peers({"a": ("127.0.0.1", pa)}, {"a": PathModel()})
    yield a, b, got
    a.close()
    b.close()


def wait_for(got: list[Message], n: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        time.sleep(0.002)
    assert len(got) >= n, f"only {len(got)} of {n} messages arrived"


def test_request_reply_roundtrip_keeps_dtype_and_shape(pair: tuple[Endpoint, Endpoint, list[Message]]) -> None:
    a, b, _ = pair
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    r = a.request("b", "double", x, {"n": 7})
    assert r.kind == "result" and r.meta["n"] == 7
    assert r.array is not None and r.array.dtype == np.float32 and r.array.shape == (2, 3, 4)
    assert np.array_equal(r.array, x * 2)
    assert a.sent_bytes["b"] > x.nbytes and b.recv_bytes["a"] == a.sent_bytes["b"]


def test_delay_is_held_from_arrival(pair: tuple[Endpoint, Endpoint, list[Message]]) -> None:
    a, b, got = pair
    b.update_path("a", PathModel(delay_ms=15.0))
    for i in range(10):
        a.send("b", "ping", np.zeros(100, dtype=np.uint8), {"i": i})
    wait_for(got, 10)
    one_way = [(m.release_ns - m.send_ns) / 1e6 for m in got]
    held = [(m.release_ns - m.arrival_ns) / 1e6 for m in got]
    assert min(held) >= 15.0 - 0.01
    assert 15.0 <= np.median(one_way) < 20.0  # precision is measured by `testbed bench links`, not here


def test_jitter_never_reorders(pair: tuple[Endpoint, Endpoint, list[Message]]) -> None:
    a, b, got = pair
    b.update_path("a", PathModel(delay_ms=5.0, jitter_ms=4.0))
    for i in range(60):
        a.send("b", "ping", None, {"i": i})
    wait_for(got, 60)
    assert [m.meta["i"] for m in got] == list(range(60))
    assert np.std([m.added_delay_ns for m in got]) > 0  # jitter did vary the hold


def test_loss_adds_retransmission_time_not_drops(pair: tuple[Endpoint, Endpoint, list[Message]]) -> None:
    a, b, got = pair
    b.update_path("a", PathModel(delay_ms=1.0, loss_pct=50.0))
    for i in range(20):
        a.send("b", "ping", np.zeros(20 * 1448, dtype=np.uint8), {"i": i})
    wait_for(got, 20, timeout=60)
    assert len(got) == 20  # nothing is dropped: TCP would retransmit
    assert np.mean([m.added_delay_ns / 1e6 for m in got]) > 10.0  # ~10 lost segments x 2 ms RTT each


def test_token_bucket_paces_wire_bytes() -> None:
    tb = TokenBucket(8.0)  # 1 MB/s
    t0 = time.monotonic()
    for _ in range(50):
        tb.consume(wire_bytes(10_000))
    dt = time.monotonic() - t0
    expected = 50 * wire_bytes(10_000) / 1e6 - tb.depth / 1e6
    assert dt == pytest.approx(expected, rel=0.1)
    assert wire_bytes(1448) == 1514 and wire_bytes(1449) == 1449 + 2 * 66


def test_unknown_peer_is_a_clear_error(pair: tuple[Endpoint, Endpoint, list[Message]]) -> None:
    a, _, _ = pair
    with pytest.raises(KeyError, match="unknown peer 'zz'"):
        a.send("zz", "ping")


def test_late_reply_is_dropped_not_handled() -> None:
    seen_a: list[Message] = []
    seen_b: list[Message] = []

    def slow(m: Message) -> tuple[str, None, dict[str, object]]:
        seen_b.append(m)
        time.sleep(0.3)
        return "result", None, {}

    a = Endpoint("a", "127.0.0.1", None, handler=seen_a.append, seed=1)
    b = Endpoint("b", "127.0.0.1", None, handler=slow, seed=2)
    pa, pb = a.start(), b.start()
    a.set_peers({"b": ("127.0.0.1", pb)}, {"b": PathModel()})
    b.set_peers({"a": ("127.0.0.1", pa)}, {"a": PathModel()})
    try:
        from concurrent.futures import TimeoutError as FutTimeout

        with pytest.raises(FutTimeout):
            a.request("b", "work", None, {}, timeout=0.05)
        time.sleep(0.6)
        assert seen_a == []  # the late reply reached no handler
        assert len(seen_b) == 1  # and nothing bounced back to b as a new request
        assert a.request("b", "work", None, {}, timeout=5).kind == "result"  # the endpoint still works
    finally:
        a.close()
        b.close()


def test_userspace_paces_each_direction_at_its_own_rate() -> None:
    from testbed.config.loader import load_topology
    from testbed.emulation.network import UserspaceNetwork
    from testbed.lifecycle.ledger import Ledger

    from ..conftest import ROOT

    topo = load_topology(ROOT / "topologies/minimal.yaml")
    net = UserspaceNetwork(topo, "u0000001", Ledger("u0000001"))
    assert net.tx_rate("dev", "edge") == 20.0 and net.tx_rate("edge", "dev") == 50.0
    assert net.tx_rate("dev", "cloud") == 20.0  # bottleneck of the two hops
    assert net.path_model("edge", "dev").delay_ms == 5.0
    net.ledger.close()


def test_bulk_channel_does_not_hold_back_requests() -> None:
    def handler(m: Message) -> tuple[str, None, dict[str, object]]:
        return "ok", None, {}

    a = Endpoint("a", "127.0.0.1", None, seed=1)
    b = Endpoint("b", "127.0.0.1", None, handler=handler, seed=2)
    pa, pb = a.start(), b.start()
    a.set_peers({"b": ("127.0.0.1", pb)}, {"b": PathModel()}, {"b": 20.0})  # 20 Mbit/s, shared by both channels
    b.set_peers({"a": ("127.0.0.1", pa)}, {"a": PathModel()})
    try:
        import threading

        big = np.zeros(2_500_000, dtype=np.uint8)  # ~1 s at 20 Mbit/s
        t = threading.Thread(target=lambda: a.request("b", "weights", big, {}, timeout=30, channel="bulk"))
        t0 = time.monotonic()
        t.start()
        time.sleep(0.1)
        r0 = time.monotonic()
        assert a.request("b", "query", np.zeros(1000, dtype=np.uint8), {}, timeout=10).kind == "ok"
        query_s = time.monotonic() - r0
        t.join()
        bulk_s = time.monotonic() - t0
        assert bulk_s > 0.9 and query_s < 0.3, (bulk_s, query_s)
    finally:
        a.close()
        b.close()
