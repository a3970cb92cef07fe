"""Seed 004's cost model: the optimum by exhaustive search and by DP on known cases; learned policies beat random."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.dil.costs import Prices, States, cost, dp_optimal, exhaustive, greedy, uniform_states
from workloads.dil.policies import ImitationPolicy


def one_state(exec_s: list[list[float]], data: list[float], radio_bps: float = 8e6, w: float = 0.01) -> States:
    return States(np.array([exec_s], float), np.array([data], float), np.array([radio_bps]), np.array([10.0]),
                  np.array([4.0]), np.array([80e6]), np.array([w]))


FREE = Prices(radio=0.0, core=0.0, backhaul=0.0)


def test_known_optimum_by_hand() -> None:
    # two sub-tasks: the first is cheap anywhere, the second 1 s locally, 0.1 s at the edge, 0.05 s in the cloud.
    # Data: 1 MB in, 10 kB between, 1 kB out; radio 8 Mbit/s (1 s per MB), W = 10 ms, backhaul 80 Mbit/s.
    st = one_state([[0.01, 0.01, 0.01], [1.0, 0.1, 0.05]], [1e6, 1e4, 1e3])
    # local then edge: 0.01 + 10 kB over the radio (0.01) + 0.1 + 1 kB back (0.001) = 0.121 s
    assert cost(st, np.array([0, 1]), FREE)[0][0] == pytest.approx(0.121)
    # local then cloud: 0.01 + (0.01 radio + 0.01 W + 0.001 backhaul) + 0.05 + (0.001 + 0.01 + 0.0001) = 0.0921 s
    assert cost(st, np.array([0, 2]), FREE)[0][0] == pytest.approx(0.0921)
    assert cost(st, np.array([0, 0]), FREE)[0][0] == pytest.approx(1.01)
    d, c = exhaustive(st, FREE)
    assert d[0].tolist() == [0, 2] and c[0] == pytest.approx(0.0921)
    dd, dc = dp_optimal(st, FREE)
    assert dd[0].tolist() == [0, 2] and dc[0] == pytest.approx(c[0])
    # price the backhaul and the edge wins
    d, _ = dp_optimal(st, Prices(radio=0.0, core=0.0, backhaul=1e-5))
    assert d[0].tolist() == [0, 1]


def test_dp_equals_exhaustive_on_random_states() -> None:
    st = uniform_states(400, 5, np.random.default_rng(1))
    d1, c1 = exhaustive(st, Prices())
    d2, c2 = dp_optimal(st, Prices())
    assert np.allclose(c1, c2) and np.allclose(cost(st, d2, Prices())[0], c2)
    assert (cost(st, greedy(st, Prices()), Prices())[0] >= c1 - 1e-12).all()  # nothing beats the optimum


def test_imitation_beats_random_on_held_out_states() -> None:
    rng = np.random.default_rng(0)
    train, test = uniform_states(4000, 4, rng), uniform_states(500, 4, rng)
    d, _ = dp_optimal(train, Prices())
    dt, ct = dp_optimal(test, Prices())
    pol = ImitationPolicy(train.features().shape[1], 4, [64, 64])
    pol.fit(train.features(), d, epochs=8)
    dec = pol.decide(test.features())
    rand = rng.integers(0, 3, dt.shape)
    assert (dec == dt).mean() > 0.7 > (rand == dt).mean()
    assert cost(test, dec, Prices())[0].mean() < cost(test, rand, Prices())[0].mean()
