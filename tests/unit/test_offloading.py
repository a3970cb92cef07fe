"""Seed 002's partition-offloading: the latency model, and PSO against greedy and random."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.migration.offloading import FLOP_PER_CYCLE, Client, Env, greedy, pso, random_plan, seed002_env

MODEL = ((1e9, 2e9, 4e9), (150_000, 3_000_000, 500_000, 4_000))


def test_latency_model_and_sharing() -> None:
    cl = Client(*MODEL, ghz=1.0)
    env = Env((cl, cl), (10.0,), ((1e6,), (1e6,)))
    local = 7e9 / (1e9 * FLOP_PER_CYCLE)
    assert env.latency([(3, 0), (3, 0)]) == pytest.approx(2 * local)
    one = env.latency([(0, 0), (3, 0)])
    both = env.latency([(0, 0), (0, 0)])
    remote = 7e9 / (10e9 * FLOP_PER_CYCLE)
    assert one == pytest.approx(local + remote + 0.154)
    assert both == pytest.approx(2 * (2 * remote + 0.154))  # the server is shared by two


def test_pso_matches_greedy_or_better_and_beats_random() -> None:
    rng = np.random.default_rng(3)
    wins = []
    for _ in range(5):
        env = seed002_env([MODEL, MODEL], rng)
        g = env.latency(greedy(env))
        p = env.latency(pso(env, rng))
        r = np.mean([env.latency(random_plan(env, rng)) for _ in range(50)])
        assert p <= r and g <= r
        wins.append(p <= g * 1.001)
    assert sum(wins) >= 4
