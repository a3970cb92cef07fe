"""Seed 002's partition-offloading: the latency model, and PSO against greedy, random and the optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workloads.migration.offloading import (
    FLOP_PER_CYCLE,
    Client,
    Env,
    exhaustive,
    from_flops,
    greedy,
    pso,
    random_plan,
    seed002_env,
)

MODEL = ((1e9, 2e9, 4e9), (150_000, 3_000_000, 500_000, 4_000))


def test_latency_model_and_sharing() -> None:
    cl = Client(from_flops(MODEL[0], 1.0), MODEL[1])
    server = from_flops(MODEL[0], 10.0)
    env = Env((cl, cl), ((server,), (server,)), ((1e6,), (1e6,)), rtt_s=((0.01,), (0.01,)))
    local = 7e9 / (1e9 * FLOP_PER_CYCLE)
    assert env.latency([(3, 0), (3, 0)]) == pytest.approx(2 * local)
    one = env.latency([(0, 0), (3, 0)])
    both = env.latency([(0, 0), (0, 0)])
    remote = 7e9 / (10e9 * FLOP_PER_CYCLE)
    assert one == pytest.approx(local + remote + 0.154 + 0.01)
    assert both == pytest.approx(2 * (2 * remote + 0.154 + 0.01))  # the server is shared by two
    assert env.per_client([(1, 0), (3, 0)])[0] == pytest.approx(1e9 / 8e9 + 6e9 / 80e9 + 3.004 + 0.01)


def test_exhaustive_is_the_brute_force_optimum() -> None:
    env = seed002_env([MODEL, MODEL], np.random.default_rng(0))
    every = [list(p) for p in itertools.product(env.options(0), env.options(1))]
    assert env.latency(exhaustive(env)) == pytest.approx(min(env.latency(p) for p in every))


def test_pso_matches_greedy_or_better_and_beats_random() -> None:
    rng = np.random.default_rng(3)
    wins = []
    for _ in range(5):
        env = seed002_env([MODEL, MODEL], rng)
        g = env.latency(greedy(env))
        p = env.latency(pso(env, rng))
        opt = env.latency(exhaustive(env))
        r = np.mean([env.latency(random_plan(env, rng)) for _ in range(50)])
        assert opt <= p + 1e-12 and opt <= g + 1e-12
        assert p <= r and g <= r
        wins.append(p <= g * 1.001)
    assert sum(wins) >= 4
