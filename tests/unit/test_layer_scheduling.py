"""Seed 001's scheduling algorithms on hand-made instances."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.layer_scheduling import group_layers
from workloads.layer_scheduling.algorithms import (
    Edge,
    Task,
    TaskType,
    fifo,
    fixed,
    lbf,
    make_edge,
    make_tasks,
    offline,
    online,
    weight,
)

SHRINK = TaskType("shrink", r=(1.0, 0.25, 0.05), l=(1e3, 8e3, 2e4))  # r*l = 1e3, 2e3, 1e3


def edge(n: int = 1, gflops: float = 1.0, mbit: float = 10.0) -> Edge:
    return Edge(np.full(n, gflops * 1e9), np.full(n, mbit * 1e6), v=1.0)


def test_demand_follows_the_seed_formulas() -> None:
    t = Task(0, SHRINK, {0: 100e3}, q_s=0.2)
    bw, comp = t.demand(2, 0)
    assert bw == pytest.approx(8 * 100e3 * 0.25 / 0.2) and comp == pytest.approx(8e3 * 100e3)
    assert t.k_m == 2  # the seed's k_jm maximises r_kj * l_kj
    assert weight(t, 2, edge()) == pytest.approx(max(1e6 / 10e6, 8e8 / 1e9))


def test_budgets_are_never_exceeded() -> None:
    rng = np.random.default_rng(0)
    tasks = make_tasks([SHRINK], 300, 5, rng)
    for run in (lambda e: offline(tasks, e), lambda e: fixed(tasks, e, 2), lambda e: fifo(tasks, e),
                lambda e: lbf(tasks, e), lambda e: online(tasks, e, 1e-4, 1.0)):
        e = make_edge(5, np.random.default_rng(1), gflops=50.0)
        run(e)
        assert (e.used_b <= e.b * e.v + 1e-6).all() and (e.used_c <= e.c + 1e-3).all()
        assert len(e.placed) > 0


def test_fixed_depth_trades_bandwidth_for_compute() -> None:
    # 10 identical tasks: k=1 is bandwidth-bound (4 Mbit/s each), k=2 compute-bound (0.8 GFLOP/s each)
    tasks = [Task(j, SHRINK, {0: 100e3}) for j in range(10)]
    assert fixed(tasks, edge(mbit=10.0, gflops=1.0), 1) == 2
    assert fixed(tasks, edge(mbit=10.0, gflops=1.0), 2) == 1
    assert fixed(tasks, edge(mbit=10.0, gflops=100.0), 3) == 10
    assert offline(tasks, edge(mbit=10.0, gflops=1.0), k_rule="lightest") >= 2


def test_fifo_evicts_and_online_holds_back() -> None:
    tasks = [Task(j, SHRINK, {0: 100e3}) for j in range(20)]
    counts = fifo(tasks, edge(mbit=10.0, gflops=0.5))
    assert counts[-1] >= 1 and max(counts) == counts[-1]  # FIFO keeps the server full
    e = edge(mbit=10.0, gflops=0.5)
    first = online(tasks[:1], e, 0.01, 1.0)
    assert first == [1]  # an empty server takes anything that fits


def test_group_layers_cuts_where_data_shrinks_most() -> None:
    elems, work, cuts = group_layers([100, 100, 25, 25, 5, 5], [1, 1, 1, 1, 1, 1], 3)
    assert elems == [25, 5, 5] and work == [3, 2, 1] and cuts == [2, 4, 5]
