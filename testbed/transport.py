"""The data plane: framed TCP messages carrying numpy buffers between node endpoints.

Every message is ``header | JSON meta | raw array bytes`` (no pickling). Sockets are created in
the node's network namespace and bound to the node's own address before they connect, so a
socket made in the wrong namespace fails (EADDRNOTAVAIL) instead of sending anything.

Link emulation done here (the parts the kernel cannot do on this host, see host-facts §3):

* delay, jitter and loss on the *receive* path: a message is held until
  ``arrival of its last byte + one-way delay (+ jitter, + loss penalty)``, which adds to the tc
  serialisation time the way netem would, and needs no clock sync between hosts;
* for the ``userspace`` backend also the rate: a token bucket on the sender paces the bytes
  (wire bytes, i.e. with per-packet TCP/IP/Ethernet overhead, so goodput matches tc's).

Every time here is emulated (``testbed.clock``): delays are held ``k`` times longer on the host and the userspace
pacer's rate is per emulated second, so both follow the run's time dilation with no further code. The final spin
(``SPIN_NS``) is in wall time, since it is about the host's timer accuracy.

Loss is modelled, not dropped: TCP would retransmit, so each lost packet (Bernoulli per
1448-byte segment) adds one round trip, or an RTO of max(200 ms, 2 RTT) when it is among the
last three segments (no duplicate ACKs to trigger a fast retransmit).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from testbed import clock
from testbed.emulation.netns import in_netns

logger = logging.getLogger(__name__)

MAGIC = b"TBv1"
_HDR_FMT = "!4sIQQ"  # magic, meta length, payload length, sender monotonic ns
_HDR_SIZE = struct.calcsize(_HDR_FMT)
SEGMENT = 1448
WIRE_PER_SEGMENT = 1514
SPIN_NS = 300_000


@dataclass(frozen=True)
class PathModel:
    """What the transport emulates on receive for traffic from one peer: delay, jitter and loss."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass
class Message:
    """One received message."""

    src: str
    dst: str
    kind: str
    meta: dict[str, Any]
    array: np.ndarray | None
    payload_bytes: int
    send_ns: int
    arrival_ns: int = 0
    release_ns: int = 0
    added_delay_ns: int = 0


def wire_bytes(payload: int) -> int:
    """Bytes tc would count on the wire for ``payload`` TCP payload bytes."""
    return max(1, math.ceil(payload / SEGMENT)) * (WIRE_PER_SEGMENT - SEGMENT) + payload


def goodput_bytes_per_s(rate_mbit: float) -> float:
    """Payload bytes per second a link of ``rate_mbit`` carries once framing and headers are paid."""
    return rate_mbit * 1e6 / 8 * (1 << 20) / wire_bytes(1 << 20)


class TokenBucket:
    """Paces a sender to ``rate_mbit`` of wire bytes, with a small bucket (2 ms, like our TBF)."""

    def __init__(self, rate_mbit: float) -> None:
        self.rate_bps = rate_mbit * 1e6 / 8
        self.depth = max(self.rate_bps * 0.002, 2 * WIRE_PER_SEGMENT)
        self.tokens = self.depth
        self.last = clock.now()
        self.lock = threading.Lock()

    def consume(self, nbytes: int) -> None:
        """Block until ``nbytes`` wire bytes may leave."""
        with self.lock:
            now = clock.now()
            self.tokens = min(self.depth, self.tokens + (now - self.last) * self.rate_bps)
            self.last = now
            self.tokens -= nbytes
            wait = -self.tokens / self.rate_bps if self.tokens < 0 else 0.0
        if wait > 0:
            clock.sleep(wait)


def _encode(kind: str, src: str, dst: str, meta: dict[str, Any],
            array: np.ndarray | None) -> tuple[bytes, memoryview | None, int]:
    m = dict(meta, kind=kind, src=src, dst=dst)
    view: memoryview | None = None
    nbytes = 0
    if array is not None:
        arr = np.ascontiguousarray(array)
        m["dtype"], m["shape"] = arr.dtype.str, list(arr.shape)
        view = memoryview(arr).cast("B") if arr.nbytes else None  # type: ignore[arg-type]
        nbytes = arr.nbytes
    mb = json.dumps(m, separators=(",", ":")).encode()
    return mb, view, nbytes


def _recv_exact(sock: socket.socket, buf: memoryview) -> bool:
    got = 0
    n = len(buf)
    while got < n:
        k = sock.recv_into(buf[got:], n - got)
        if k == 0:
            return False
        got += k
    return True


class Endpoint:
    """One node's transport endpoint: a listener plus one persistent connection per peer.

    Parameters
    ----------
    node:
        The node's name.
    address:
        The node's own address; every socket binds to it.
    netns:
        The node's network namespace (``None``: the current one, as in the userspace backend).
    handler:
        Called with each message that is not a reply to one of our requests; may return
        ``(kind, array, meta)`` to answer it. Runs on a small thread pool.
    seed:
        Seeds the jitter/loss generator.
    """

    def __init__(self, node: str, address: str, netns: str | None, handler: Callable[[Message], Any] | None = None,
                 seed: int = 0, handler_threads: int = 4) -> None:
        self.node = node
        self.address = address
        self.netns = netns
        self.handler = handler
        self.port = 0
        self.peers: dict[str, tuple[str, int]] = {}
        self.paths: dict[str, PathModel] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        # one TCP connection per (peer, channel): a bulk transfer on its own channel (model weights) shares
        # the link with queries instead of holding them behind it (head-of-line blocking)
        self._conns: dict[tuple[str, str], socket.socket] = {}
        self._conn_locks: dict[tuple[str, str], threading.Lock] = {}
        self._conns_lock = threading.Lock()
        self._heap: list[tuple[int, int, Message]] = []
        self._heap_cv = threading.Condition()
        self._seq = itertools.count()
        self._pending: dict[int, Future[Message]] = {}
        self._pending_dst: dict[int, str] = {}  # which peer each pending request waits on
        self._corr = itertools.count(1)
        self._last_release: dict[tuple[str, str], int] = {}
        self._pool = ThreadPoolExecutor(max_workers=handler_threads, thread_name_prefix=f"tb-{node}-h")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepted: list[socket.socket] = []
        self._count_lock = threading.Lock()
        self.sent_bytes: dict[str, int] = {}
        self.recv_bytes: dict[str, int] = {}
        self._listener: socket.socket | None = None

    # -- setup ----------------------------------------------------------------------------
    def _socket(self) -> socket.socket:
        with in_netns(self.netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def start(self) -> int:
        """Listen on the node's address; returns the port."""
        s = self._socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.address, 0))
        s.listen(256)
        self._listener = s
        self.port = s.getsockname()[1]
        for target, name in ((self._accept_loop, "accept"), (self._deliver_loop, "deliver")):
            t = threading.Thread(target=target, name=f"tb-{self.node}-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self.port

    def set_peers(self, peers: dict[str, tuple[str, int]], paths: dict[str, PathModel],
                  tx_rates: dict[str, float | None] | None = None) -> None:
        """Tell the endpoint where peers listen, what it emulates on receive, and how fast it may send.

        ``paths[p]`` describes traffic *from p to this node* (delay/jitter/loss, applied on
        receive). ``tx_rates[p]`` is the rate of the path *from this node to p*; when given
        (userspace backend) the sender paces itself with a token bucket.
        """
        self.peers = dict(peers)
        self.paths = dict(paths)
        self.buckets = {p: TokenBucket(r) for p, r in (tx_rates or {}).items() if r}

    def update_path(self, peer: str, model: PathModel, tx_rate: float | None = None) -> None:
        """Change what the paths to and from ``peer`` emulate (scenario events); replaces, never stacks."""
        self.paths[peer] = model
        if tx_rate:
            self.buckets[peer] = TokenBucket(tx_rate)
        else:
            self.buckets.pop(peer, None)

    # -- sending --------------------------------------------------------------------------
    def _conn(self, dst: str, channel: str = "data") -> tuple[socket.socket, threading.Lock]:
        key = (dst, channel)
        with self._conns_lock:
            if key in self._conns:
                return self._conns[key], self._conn_locks[key]
            addr = self.peers.get(dst)
            if addr is None:
                raise KeyError(f"{self.node}: no route to unknown peer {dst!r}")
            s = self._socket()
            try:
                s.bind((self.address, 0))  # fail closed outside our namespace
                s.connect(addr)
                s.sendall(json.dumps({"hello": self.node, "channel": channel}).encode().ljust(128))
            except OSError:
                s.close()
                raise
            self._conns[key] = s
            self._conn_locks[key] = threading.Lock()
            t = threading.Thread(target=self._rx_loop, args=(s, dst, channel), name=f"tb-{self.node}-rx-{dst}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
            return s, self._conn_locks[key]

    def send(self, dst: str, kind: str, array: np.ndarray | None = None, meta: dict[str, Any] | None = None,
             channel: str = "data") -> int:
        """Send one message; returns the payload bytes (meta + array) that crossed the link.

        Messages on one ``channel`` keep their order; different channels travel on separate
        connections that share the emulated link (and its rate limit).
        """
        m = dict(meta or {})
        if channel != "data":
            m["ch"] = channel
        mb, view, nbytes = _encode(kind, self.node, dst, m, array)
        sock, lock = self._conn(dst, channel)
        total = _HDR_SIZE + len(mb) + nbytes
        bucket = self.buckets.get(dst)
        with lock:
            hdr = struct.pack(_HDR_FMT, MAGIC, len(mb), nbytes, clock.now_ns())
            if bucket is None:
                sock.sendall(hdr + mb)
                if view is not None:
                    sock.sendall(view)
            else:
                self._paced_send(sock, bucket, hdr + mb, view)
        with self._count_lock:
            self.sent_bytes[dst] = self.sent_bytes.get(dst, 0) + total
        return total

    @staticmethod
    def _paced_send(sock: socket.socket, bucket: TokenBucket, head: bytes, view: memoryview | None) -> None:
        chunk = 16 * SEGMENT
        bucket.consume(wire_bytes(len(head)))
        sock.sendall(head)
        if view is None:
            return
        for off in range(0, len(view), chunk):
            part = view[off:off + chunk]
            bucket.consume(wire_bytes(len(part)))
            sock.sendall(part)

    def request(self, dst: str, kind: str, array: np.ndarray | None = None, meta: dict[str, Any] | None = None,
                timeout: float = 120.0, channel: str = "data") -> Message:
        """Send and wait for the reply (``timeout`` in emulated seconds)."""
        corr = next(self._corr)
        fut: Future[Message] = Future()
        self._pending[corr] = fut
        self._pending_dst[corr] = dst
        try:
            self.send(dst, kind, array, dict(meta or {}, corr=corr), channel)
            return fut.result(clock.wall(timeout))
        finally:
            self._pending.pop(corr, None)
            self._pending_dst.pop(corr, None)

    # -- receiving ------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                c, _ = self._listener.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = bytearray(128)
            try:
                c.settimeout(5.0)  # wall: a silent or garbled client must not stall the listener
                if not _recv_exact(c, memoryview(hello)):
                    raise ValueError("closed before hello")
                hello_msg = json.loads(bytes(hello).strip())
                peer, channel = str(hello_msg["hello"]), str(hello_msg.get("channel", "data"))
                c.settimeout(None)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("%s: dropped a connection without a valid hello: %s", self.node, exc)
                c.close()
                continue
            self._accepted.append(c)
            with self._conns_lock:
                # replies go back over the connection the peer opened
                self._conns.setdefault((peer, channel), c)
                self._conn_locks.setdefault((peer, channel), threading.Lock())
            t = threading.Thread(target=self._rx_loop, args=(c, peer, channel), name=f"tb-{self.node}-rx-{peer}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _hold_ns(self, src: str, payload: int) -> int:
        m = self.paths.get(src)
        if m is None:
            return 0
        with self._rng_lock:
            d = m.delay_ms
            if m.jitter_ms:
                d = max(0.0, d + float(self.rng.normal(0.0, m.jitter_ms)))
            if m.loss_pct:
                nseg = max(1, math.ceil(payload / SEGMENT))
                lost = self.rng.random(nseg) < m.loss_pct / 100.0
                if lost.any():
                    rtt = 2 * m.delay_ms
                    tail = lost[-3:].sum() if nseg > 3 else lost.sum()
                    d += (lost.sum() - tail) * rtt + tail * max(200.0, 2 * rtt)
        return int(d * 1e6)

    def _rx_loop(self, sock: socket.socket, peer: str, channel: str = "data") -> None:
        try:
            self._rx(sock, peer, channel)
        finally:
            if not self._stop.is_set():
                self._peer_gone(sock, peer, channel)

    def _peer_gone(self, sock: socket.socket, peer: str, channel: str) -> None:
        """The connection closed under us (the peer crashed or restarted): forget it, so the next send
        reconnects, and fail the requests still waiting on that peer instead of letting them time out."""
        with self._conns_lock:
            if self._conns.get((peer, channel)) is sock:
                del self._conns[(peer, channel)]
        try:
            sock.close()
        except OSError:
            pass
        self.fail_pending(f"{peer} closed the connection", peer)

    def fail_pending(self, reason: str, peer: str | None = None) -> int:
        """Fail the requests still waiting for a reply from ``peer`` (every peer: this node left the network)
        with ``ConnectionError``; returns how many."""
        n = 0
        for corr, dst in list(self._pending_dst.items()):
            fut = self._pending.get(corr)
            if (peer is None or dst == peer) and fut is not None and not fut.done():
                try:
                    fut.set_exception(ConnectionError(f"{self.node}: {reason}"))
                    n += 1
                except InvalidStateError:  # the reply won the race: that request was answered
                    pass
        return n

    def _rx(self, sock: socket.socket, peer: str, channel: str) -> None:
        hdr = bytearray(_HDR_SIZE)
        while not self._stop.is_set():
            try:
                if not _recv_exact(sock, memoryview(hdr)):
                    return
                magic, mlen, plen, send_ns = struct.unpack(_HDR_FMT, hdr)
                if magic != MAGIC:
                    logger.error("%s: bad frame from %s; closing", self.node, peer)
                    return
                mbuf = bytearray(mlen)
                if not _recv_exact(sock, memoryview(mbuf)):
                    return
                meta = json.loads(mbuf)
                arr = None
                if "dtype" in meta:
                    arr = np.empty(plen, dtype=np.uint8)
                    if plen and not _recv_exact(sock, memoryview(arr)):  # type: ignore[arg-type]
                        return
                    arr = arr.view(np.dtype(meta.pop("dtype"))).reshape(meta.pop("shape"))
            except OSError:
                return
            arrival = clock.now_ns()
            total = _HDR_SIZE + mlen + plen
            with self._count_lock:
                self.recv_bytes[peer] = self.recv_bytes.get(peer, 0) + total
            hold = self._hold_ns(peer, total)
            release = max(arrival + hold, self._last_release.get((peer, channel), 0))  # TCP keeps order
            self._last_release[(peer, channel)] = release
            msg = Message(meta.pop("src", peer), meta.pop("dst", self.node), meta.pop("kind", ""), meta, arr, total,
                          send_ns, arrival, release, release - arrival)
            if hold == 0 and release <= arrival:
                self._dispatch(msg)
            else:
                with self._heap_cv:
                    heapq.heappush(self._heap, (release, next(self._seq), msg))
                    self._heap_cv.notify()

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            with self._heap_cv:
                while not self._heap and not self._stop.is_set():
                    self._heap_cv.wait(0.5)  # wall: idle poll
                if self._stop.is_set():
                    return
                release = self._heap[0][0]
                ahead = clock.wall_ns(release - clock.now_ns())  # wall ns until the release
                if ahead > SPIN_NS:
                    self._heap_cv.wait((ahead - SPIN_NS) / 1e9)  # wall: converted above
                    continue
                _, _, msg = heapq.heappop(self._heap)
            while clock.now_ns() < msg.release_ns:
                pass  # final spin: Condition.wait alone is 130-200 us late (host-facts §3)
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        try:
            if msg.meta.get("reply"):
                # a reply never goes to the handler; one whose request timed out is dropped
                fut = self._pending.pop(msg.meta.get("corr"), None)  # type: ignore[arg-type]
                if fut is None:
                    logger.warning("%s: late reply %s from %s dropped", self.node, msg.kind, msg.src)
                elif not fut.done():
                    fut.set_result(msg)
                return
            if self.handler is not None:
                self._pool.submit(self._handle, msg)
        except Exception:  # one bad message must not stop the delivery or receive thread
            logger.exception("%s: could not dispatch %s from %s", self.node, msg.kind, msg.src)

    def _handle(self, msg: Message) -> None:
        try:
            out = self.handler(msg) if self.handler else None
            if out is not None and "corr" in msg.meta:
                kind, arr, meta = out
                self.send(msg.src, kind, arr, dict(meta or {}, corr=msg.meta["corr"], reply=True),
                          str(msg.meta.get("ch", "data")))
        except Exception:
            logger.exception("%s: handler failed on %s from %s", self.node, msg.kind, msg.src)
            if "corr" in msg.meta:
                try:
                    self.send(msg.src, "error", None,
                              {"corr": msg.meta["corr"], "reply": True, "error": "handler failed"},
                              str(msg.meta.get("ch", "data")))
                except OSError:
                    pass

    def close(self) -> None:
        """Stop threads and close every socket."""
        self._stop.set()
        with self._heap_cv:
            self._heap_cv.notify_all()
        for s in [self._listener, *self._conns.values(), *self._accepted]:
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
