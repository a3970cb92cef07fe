"""Benchmarks of time dilation (issue 16): what ``k`` must change, what it must not, and that the host does not
matter. Each prints measured beside target (``testbed bench dilation | classes-all | demo``).

* ``dilation``: links at k = 1, 10 and 50 at 0.1-1000 Mbit/s emulated (goodput within 2 % of the rate after
  header overhead) and one-way delays of 5, 20 and 100 ms (median within 0.5 ms), in emulated seconds, on each
  link backend; and classes slower than the host at k = 1 against k = 10 (medians agree within 3 %).
* ``classes-all``: every catalog class on every model it has a figure for, the nodes of each model computing at
  once, at the ``k`` that ``auto`` picks for them (median within 10 % of the figure).
* ``demo``: the demo as is and with a CPU-burning competitor on every core for its whole length; per device and
  tier medians agree within 10 %, the winner per device is the same, and it is the winner the catalog predicts.
"""

from __future__ import annotations

import math
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from testbed import clock
from testbed.bench import Row, _wait_inbox, endpoints, link, median_one_way_ms
from testbed.config.loader import load_catalog
from testbed.config.models import Tier
from testbed.emulation.tc import HEADER_EFFICIENCY
from testbed.lifecycle.ledger import Ledger
from testbed.topology import Link, Node, Topology, assign_addresses

DILATIONS = (1.0, 10.0, 50.0)
RATES = (0.1, 1.0, 10.0, 100.0, 1000.0)
DELAYS = (5.0, 20.0, 100.0)
CONCURRENT_WALL_MBIT = 20.0  # links up to this wall rate are measured side by side (little CPU each)


@contextmanager
def competitor(cores: int | None = None, limit_s: float = 3600.0) -> Iterator[list[int]]:
    """A CPU-burning competitor on every core: ``cores`` busy processes, each recorded in a ledger before it
    starts, ending by itself after ``limit_s`` at the latest and killed (by PID) when the block ends."""
    n = cores or os.cpu_count() or 1
    ledger = Ledger(f"burn{secrets.token_hex(2)}")
    code = f"import time\nend = time.monotonic() + {limit_s}\nwhile time.monotonic() < end: pass\n"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            import psutil

            ledger.record("pid", str(p.pid), pid=p.pid, start=psutil.Process(p.pid).create_time())
            procs.append(p)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            ledger.forget("pid", str(p.pid))
        ledger.close()


def steady_goodput_mbit(a: Any, b: Any, rate_mbit: float, emulated_s: float = 0.5) -> float:
    """Goodput of a bulk transfer once the bucket's free burst has gone: payload after the first message over
    the time from its arrival to the last one's, in emulated time. At least 24 full frames cross."""
    total = max(int(rate_mbit * 1e6 / 8 * emulated_s), 24 * 1448)
    msg = int(max(4 * 1448 - 128, min(1 << 20, total // 12)))
    n = max(6, math.ceil(total / msg))
    buf = np.zeros(msg, dtype=np.uint8)
    a.send("b", "warm", buf[:100])
    _wait_inbox(b, 1, clock.wall(30) + 30)
    b.inbox.clear()
    for _ in range(n):
        a.send("b", "bulk", buf)
    got = sorted(_wait_inbox(b, n, 3600), key=lambda m: m.arrival_ns)
    if len(got) < n:
        return 0.0
    span_ns = got[-1].arrival_ns - got[0].arrival_ns
    return sum(m.payload_bytes for m in got[1:]) * 8 / (span_ns / 1e9) / 1e6


def _measure(pairs: dict[tuple[str, float], Any], key: tuple[str, float], got: dict[tuple[str, float], float]) -> None:
    a, b, _ = pairs[key]
    got[key] = steady_goodput_mbit(a, b, key[1])


def _one_link(be: str, rate: float, out: dict[tuple[str, float], float]) -> None:
    with endpoints(be, link(rate)) as (a, b, _):
        out[(be, rate)] = steady_goodput_mbit(a, b, rate)


def bench_dilated_links(backends: list[str], ks: tuple[float, ...] = DILATIONS, rates: tuple[float, ...] = RATES,
                        delays: tuple[float, ...] = DELAYS) -> list[Row]:
    """Goodput and delay at each ``k``, in emulated time. Slow links (wall rate <= 20 Mbit/s) of one ``k`` are
    measured side by side on links of their own; the fast ones one at a time."""
    rows = []
    for k in ks:
        with clock.dilated(k):
            got: dict[tuple[str, float], float] = {}
            slow = [(be, r) for be in backends for r in rates if r / k <= CONCURRENT_WALL_MBIT]
            with ExitStack() as stack:  # built one after another, measured side by side
                pairs = {(be, r): stack.enter_context(endpoints(be, link(r))) for be, r in slow}

                threads = [threading.Thread(target=_measure, args=(pairs, key, got), daemon=True) for key in slow]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            for be in backends:
                for r in rates:
                    if (be, r) not in slow:
                        _one_link(be, r, got)
            for be in backends:
                for r in rates:
                    g, exp = got.get((be, r), 0.0), r * HEADER_EFFICIENCY
                    rows.append(Row("dilation", f"{be} k={k:g}: goodput at {r:g} Mbit (emulated)", g, exp, "Mbit/s",
                                    100 * (g / exp - 1), 2.0, "%"))
                for d in delays:
                    med = median_one_way_ms(be, d, 30, clock.wall(30) + 30)
                    rows.append(Row("dilation", f"{be} k={k:g}: one-way delay {d:g} ms (median, emulated)", med, d,
                                    "ms", med - d, 0.5, "ms"))
    return rows


def _single_node(hc_name: str, model: str) -> Topology:
    from testbed.bench import pair_topology

    topo = pair_topology(link(1000))
    hc = load_catalog().hardware_classes[hc_name]
    return Topology(topo.name, {"a": Node("a", Tier.DEVICE, hc, topo.nodes["a"].address), "b": topo.nodes["b"]},
                    topo.links, topo.address_pool, topo.source)


def _local_medians(tb: Any, nodes: dict[str, int], model: str) -> dict[str, float]:
    """Each node runs ``n`` requests of ``model`` on itself, all at once; median compute ms per node."""
    import ray

    for n in nodes:
        tb.add_role(n, "inference", {"model": model, "input_shape": [3, 224, 224], "input_dtype": "uint8"})
        tb.load_model(n, model, model)
    warm = [tb.call_async(n, "inference", "run_requests", target=n, target_tier="device", n=1, first_id=0,
                          interval_ms=0.0, record=False) for n in nodes]
    ray.get(warm)
    tb.drain()
    futs = [tb.call_async(n, "inference", "run_requests", target=n, target_tier="device", n=k, first_id=0,
                          interval_ms=0.0) for n, k in nodes.items()]
    ray.get(futs)
    spans, _ = tb.drain()
    return {n: statistics.median(s["duration_ms"] for s in spans if s["kind"] == "compute" and s["node"] == n)
            for n in nodes}


def bench_dilation_compute(compute: str, pairs: tuple[tuple[str, str], ...] = (("rpi4b", "resnet18"),
                                                                              ("rpi3b", "resnet18")),
                           ks: tuple[float, ...] = (1.0, 10.0), requests: int = 20) -> list[Row]:
    """Classes slower than the host at k = 1 and k = 10: each median against the figure, and against each other."""
    from testbed.testbed import Testbed

    cat = load_catalog()
    rows = []
    for hardware, m in pairs:
        target = cat.hardware_classes[hardware].reference_latency_ms[m].value
        med: dict[float, float] = {}
        for k in ks:
            with Testbed(_single_node(hardware, m), secrets.token_hex(4), 0, "userspace", compute, {"a": m, "b": None},
                         time_dilation=k) as tb:
                tb.fit_caps()
                backend = tb.plans()["a"].backend
                med[k] = _local_medians(tb, {"a": requests}, m)["a"]
            rows.append(Row("dilation", f"{hardware} {m} at k={k:g} ({backend}): median compute", med[k], target, "ms",
                            100 * (med[k] / target - 1), 10.0, "%"))
        for k in ks[1:]:
            rows.append(Row("dilation", f"{hardware} {m}: median at k={k:g} vs k={ks[0]:g}", med[k], med[ks[0]], "ms",
                            100 * (med[k] / med[ks[0]] - 1), 3.0, "%"))
    return rows


def class_groups(models: tuple[str, ...], span: float = 8.0) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each model, the classes with a catalog figure for it, in groups whose figures lie within ``span`` of
    each other (one run per group: the slowest member sets the run's length, the fastest its ``k``)."""
    cat = load_catalog()
    out = []
    for m in models:
        have = sorted((hc.reference_latency_ms[m].value, name) for name, hc in cat.hardware_classes.items()
                      if m in hc.reference_latency_ms)
        group: list[tuple[str, float]] = []
        for v, name in have:
            if group and v > group[0][1] * span:
                out.append((m, group))
                group = []
            group.append((name, v))
        if group:
            out.append((m, group))
    return out


QUICK_MODELS = ("resnet18", "mobilenet_v2", "alexnet")
FULL_MODELS = (*QUICK_MODELS, "vgg16", "resnet50")


def bench_classes_all(compute: str = "dilation", models: tuple[str, ...] = QUICK_MODELS, requests: int = 5,
                      max_time_dilation: float = 5000.0, max_wall_s: float = 120.0) -> list[Row]:
    """Every catalog class on every model it has a figure for, the nodes of one group computing at once at the
    ``k`` auto picks for them. A group whose run would take more than ``max_wall_s`` is cut to fewer requests
    (at least 3 on its slowest node)."""
    from testbed.calibration import CalibrationStore, host_latency_ms
    from testbed.testbed import Testbed

    cat = load_catalog()
    rows = []
    store = CalibrationStore.load()
    for m, group in class_groups(models):
        names = [f"n{i}" for i in range(len(group))]
        addrs, links = assign_addresses("198.18.0.0/15", len(group) + 1, len(group))
        nodes = {n: Node(n, Tier.DEVICE, cat.hardware_classes[c], addrs[i]) for i, (n, (c, _)) in
                 enumerate(zip(names, group, strict=True))}
        hub = load_catalog().hardware_classes["rpi4b"]
        nodes["hub"] = Node("hub", Tier.EDGE, hub, addrs[-1])
        lks = tuple(Link(i, n, "hub", link(1000), link(1000), None, None, links[i][0], links[i][1], links[i][2])
                    for i, n in enumerate(names))
        topo = Topology(f"classes-{m}", nodes, lks, "198.18.0.0/15", "<bench>")
        slowest = max(v for _, v in group)
        fastest = min(v for _, v in group)
        k_est = max(2.0 * host_latency_ms(store, m) / fastest, 1.0)
        n_slow = max(3, min(requests, int(max_wall_s / (slowest * k_est / 1e3))))
        # every node busy for about as long as the slowest: faster classes run more requests
        counts = {n: max(3, round(n_slow * slowest / v)) for n, (_, v) in zip(names, group, strict=True)}
        with Testbed(topo, secrets.token_hex(4), 0, "userspace", compute, {**{n: m for n in names}, "hub": None},
                     time_dilation="auto", max_time_dilation=max_time_dilation) as tb:
            tb.fit_caps()
            med = _local_medians(tb, counts, m)
            plans = tb.plans()
            for n, (c, v) in zip(names, group, strict=True):
                rows.append(Row("classes-all", f"{c} {m} (k={tb.k:g}, {plans[n].backend}, {len(group)} at once)",
                                med[n], v, "ms", 100 * (med[n] / v - 1), 10.0, "%"))
    return rows


def predicted_winners(exp: Any) -> dict[str, tuple[str, dict[str, float]]]:
    """The winner per device from the catalog alone: the class's figure on the tier that computes, plus the
    frame's transfer at the path's slowest rate and the path's delays both ways (the reply: 1000 float32)."""
    from testbed.calibration import CalibrationStore, class_target_ms
    from testbed.workload import MODELS

    topo = exp.topology
    p = exp.params
    md = MODELS.get(p.model)
    frame = int(np.prod(md.input_shape)) * (1 if p.input_dtype == "uint8" else 4)
    reply = md.num_classes * 4
    store = CalibrationStore.load()
    out = {}
    for d in topo.by_tier(Tier.DEVICE):
        cost: dict[str, float] = {}
        for t in p.tiers:
            node = d if t == Tier.DEVICE else topo.nearest(d, t)
            comp = class_target_ms(store, topo.nodes[node].hardware, p.model)[0] or math.nan
            if node == d:
                cost[t.value] = comp
                continue
            up, down = topo.path(d, node), topo.path(node, d)
            cost[t.value] = (comp + frame * 8 / (up.rate_mbit * 1e3) / HEADER_EFFICIENCY + up.delay_ms
                             + reply * 8 / (down.rate_mbit * 1e3) / HEADER_EFFICIENCY + down.delay_ms)
        out[d] = (min(cost, key=lambda t: cost[t]), cost)
    return out


def bench_demo_host(path: str = "experiments/demo.yaml") -> list[Row]:
    """The demo twice in one bench: as is, and with a CPU-burning competitor on every core for its whole length."""
    import tempfile

    from testbed.config.loader import load_experiment
    from testbed.runner import run_experiment

    exp = load_experiment(path)
    runs = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as d:
        for label in ("idle", "loaded"):
            t0 = time.monotonic()  # wall: the demo's wall time
            if label == "loaded":
                with competitor():
                    out = run_experiment(exp, d)
            else:
                out = run_experiment(exp, d)
            wall = time.monotonic() - t0  # wall: the demo's wall time
            runs[label] = out.summary.set_index(["device", "phase"])
            k = out.manifest.get("time", {}).get("time_dilation", 1.0)
            over = [w for w in out.warnings if "add up to" in w]
            rows.append(Row("demo", f"demo wall time, {label} host (k={k:g})", wall, 300.0, "s",
                            max(0.0, wall - 300.0), 0.0, "s over 300"))
            rows.append(Row("demo", f"oversubscription warnings, {label} host", len(over), 0, "", len(over), 0, ""))
    idle, loaded = runs["idle"], runs["loaded"]
    for key in idle.index:
        a, b = idle.loc[key, "latency_p50_ms"], loaded.loc[key, "latency_p50_ms"]
        rows.append(Row("demo", f"{key[0]} on {key[1]}: p50 loaded vs idle host", b, a, "ms", 100 * (b / a - 1),
                        10.0, "%"))
    pred = predicted_winners(exp)
    for dev in sorted({k[0] for k in idle.index}):
        w_idle = idle.loc[dev]["latency_p50_ms"].idxmin()
        w_loaded = loaded.loc[dev]["latency_p50_ms"].idxmin()
        w_pred, cost = pred[dev]
        same = int(w_idle == w_loaded == w_pred)
        rows.append(Row("demo", f"{dev}: winner idle {w_idle}, loaded {w_loaded}, catalog predicts {w_pred} "
                                f"({', '.join(f'{t} {c:.0f} ms' for t, c in cost.items())})",
                        same, 1, "agree", same - 1, 0, ""))
    return rows
