"""Seed 004's offloading model: a chain of T sub-tasks, each run locally (0), at the edge (1) or in the cloud (2).

The seed names the parts of the cost but gives no formulas; these are the ones used here:

* execution time of sub-task t at location l: ``exec_s[t, l]`` (local: cycles / device rate; edge:
  cycles / (n allocated cores x per-core rate); cloud: cycles / cloud rate; or measured block times);
* transfer of the data between consecutive locations (the input starts on the device and the result goes
  back to it): device-edge over the radio at ``m`` subcarriers x bandwidth x log2(1 + SNR |h|^2) (Rayleigh
  fading draws |h|^2 ~ Exp(1)), edge-cloud over the wired backhaul with delay W, device-cloud over both;
* resource usage: radio (subcarrier-seconds of airtime), edge cores (core-seconds) and backhaul bytes,
  priced by configurable weights.

Cost of a decision = latency + price_radio x radio + price_core x core + price_backhaul x backhaul.
Because every term depends on one sub-task or on two consecutive ones, the optimum over the 3^T
decisions is a shortest path through a 3-state trellis: ``dp_optimal`` solves it exactly in O(9T) and
``exhaustive`` checks it by enumeration for small T.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

LOCAL, EDGE, CLOUD = 0, 1, 2


@dataclass(frozen=True)
class Prices:
    radio: float = 0.001  # per subcarrier-second
    core: float = 0.01  # per edge core-second
    backhaul: float = 2e-7  # per byte
    time: float = 1.0  # per second of latency


@dataclass
class States:
    """N states at once (vectorised): per state, T sub-tasks."""

    exec_s: np.ndarray  # N x T x 3
    data: np.ndarray  # N x (T+1) bytes: data[:, 0] the input, data[:, T] the result
    radio_bps: np.ndarray  # N
    subcarriers: np.ndarray  # N (allocated m)
    cores: np.ndarray  # N (allocated n)
    backhaul_bps: np.ndarray  # N
    wired_s: np.ndarray  # N (W)

    @property
    def n(self) -> int:
        return int(self.exec_s.shape[0])

    @property
    def t(self) -> int:
        return int(self.exec_s.shape[1])

    def take(self, idx: np.ndarray | slice) -> States:
        return States(self.exec_s[idx], self.data[idx], self.radio_bps[idx], self.subcarriers[idx],
                      self.cores[idx], self.backhaul_bps[idx], self.wired_s[idx])

    def features(self) -> np.ndarray:
        """The DIL model's input: log-scaled execution times and data sizes, and the network state."""
        n = self.n
        return np.concatenate([
            np.log10(self.exec_s.reshape(n, -1) + 1e-6), np.log10(self.data + 1.0),
            np.stack([np.log10(self.radio_bps), self.subcarriers / 256, self.cores / 16,
                      np.log10(self.backhaul_bps), self.wired_s * 50], axis=1)], axis=1).astype(np.float32)


def transfer(st: States, nbytes: np.ndarray, a: int, b: int, p: Prices) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, resource cost) to move ``nbytes`` (per state) from location a to b."""
    if a == b:
        return np.zeros(st.n), np.zeros(st.n)
    radio = nbytes * 8 / st.radio_bps if LOCAL in (a, b) else np.zeros(st.n)
    wired = (st.wired_s + nbytes * 8 / st.backhaul_bps) if CLOUD in (a, b) else np.zeros(st.n)
    res = p.radio * radio * st.subcarriers + (p.backhaul * nbytes if CLOUD in (a, b) else 0.0)
    return radio + wired, res


def step_cost(st: States, t: int, loc: int, p: Prices) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, resource cost) of running sub-task t at ``loc``."""
    s = st.exec_s[:, t, loc]
    res = p.core * s * st.cores if loc == EDGE else np.zeros(st.n)
    return s, res


def cost(st: States, decisions: np.ndarray, p: Prices) -> tuple[np.ndarray, np.ndarray]:
    """(cost, latency) per state of ``decisions`` (N x T, or T for the same decision everywhere)."""
    d = np.broadcast_to(decisions, (st.n, st.t))
    total = np.zeros(st.n)
    lat = np.zeros(st.n)
    prev = np.full(st.n, LOCAL)
    for t in range(st.t + 1):
        cur = d[:, t] if t < st.t else np.full(st.n, LOCAL)
        for a in range(3):
            for b in range(3):
                mask = (prev == a) & (cur == b)
                if mask.any() and a != b:
                    s, r = transfer(st, st.data[:, t], a, b, p)
                    lat += np.where(mask, s, 0)
                    total += np.where(mask, p.time * s + r, 0)
        if t < st.t:
            for loc in range(3):
                mask = cur == loc
                if mask.any():
                    s, r = step_cost(st, t, loc, p)
                    lat += np.where(mask, s, 0)
                    total += np.where(mask, p.time * s + r, 0)
        prev = cur
    return total, lat


def dp_optimal(st: States, p: Prices) -> tuple[np.ndarray, np.ndarray]:
    """Exact optimum by dynamic programming over the trellis; (decisions N x T, cost N)."""
    best = np.full((st.n, 3), np.inf)
    back = np.zeros((st.n, st.t, 3), dtype=np.int64)
    for loc in range(3):  # the input starts on the device
        s, r = transfer(st, st.data[:, 0], LOCAL, loc, p)
        e, er = step_cost(st, 0, loc, p)
        best[:, loc] = p.time * (s + e) + r + er
    for t in range(1, st.t):
        new = np.full((st.n, 3), np.inf)
        for b in range(3):
            e, er = step_cost(st, t, b, p)
            for a in range(3):
                s, r = transfer(st, st.data[:, t], a, b, p)
                c = best[:, a] + p.time * (s + e) + r + er
                better = c < new[:, b]
                new[:, b] = np.where(better, c, new[:, b])
                back[:, t, b] = np.where(better, a, back[:, t, b])
        best = new
    for a in range(3):  # the result goes back to the device
        s, r = transfer(st, st.data[:, st.t], a, LOCAL, p)
        best[:, a] += p.time * s + r
    last = np.argmin(best, axis=1)
    dec = np.zeros((st.n, st.t), dtype=np.int64)
    dec[:, -1] = last
    for t in range(st.t - 1, 0, -1):
        dec[:, t - 1] = back[np.arange(st.n), t, dec[:, t]]
    return dec, best[np.arange(st.n), last]


def exhaustive(st: States, p: Prices) -> tuple[np.ndarray, np.ndarray]:
    """All 3^T decisions for every state (small T); (decisions N x T, cost N)."""
    all_d = np.array(list(itertools.product(range(3), repeat=st.t)))
    costs = np.stack([cost(st, d, p)[0] for d in all_d], axis=1)
    i = np.argmin(costs, axis=1)
    return all_d[i], costs[np.arange(st.n), i]


def greedy(st: States, p: Prices) -> np.ndarray:
    """GOS: each sub-task in turn at the location cheapest given the previous one (no look-ahead)."""
    dec = np.zeros((st.n, st.t), dtype=np.int64)
    prev = np.full(st.n, LOCAL)
    for t in range(st.t):
        opts = []
        for b in range(3):
            e, er = step_cost(st, t, b, p)
            c = p.time * e + er
            for a in range(3):
                s, r = transfer(st, st.data[:, t], a, b, p)
                c = c + np.where(prev == a, p.time * s + r, 0)
            opts.append(c)
        dec[:, t] = np.argmin(np.stack(opts, axis=1), axis=1)
        prev = dec[:, t]
    return dec


def uniform_states(n: int, t: int, rng: np.random.Generator) -> States:
    """The seed's setting: workloads and data uniform; 16 edge cores, 256 subcarriers, Rayleigh fading,
    W in [0.01, 0.02] s. Ranges for what the seed leaves out are stated here."""
    cycles = rng.uniform(0.05e9, 0.6e9, (n, t))
    data = rng.uniform(10e3, 300e3, (n, t + 1))
    cores = rng.integers(1, 17, n)  # allocated of the SCcNB's 16
    subs = rng.integers(16, 257, n)  # allocated of its 256 subcarriers
    snr = 10 ** (rng.uniform(5, 25, n) / 10) * rng.exponential(1.0, n)  # 5-25 dB mean, Rayleigh |h|^2
    radio = subs * 15e3 * np.log2(1 + snr)  # 15 kHz subcarriers
    f_local, f_core, f_cloud = 1.0e9, 2.0e9, 20e9  # cycles/s: device, one edge core, cloud
    exec_s = np.stack([cycles / f_local, cycles / (cores[:, None] * f_core), cycles / f_cloud], axis=2)
    backhaul = rng.uniform(20e6, 200e6, n)  # bit/s
    return States(exec_s, data, radio, subs.astype(float), cores.astype(float), backhaul, rng.uniform(0.01, 0.02, n))
