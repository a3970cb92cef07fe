"""Seed 002's partition-offloading in a multi-user, multi-server edge-cloud environment: PSO vs greedy and random.

Environment (the seed's setting): 2 clients, 5 edge and 5 cloud servers; bandwidth client-edge 10 MB/s,
client-cloud 0.5 MB/s; CPU 1.1-2.3 GHz (clients), 4.2-18.3 GHz (edge), 40-120 GHz (cloud). Each client
runs one model, cut once: blocks ``[0, c)`` on the client (P2), ``[c, n)`` on one server (P1). A server
shared by several clients splits its capacity among them. Block work comes from real models (FLOPs),
at ``FLOP_PER_CYCLE`` FLOP per cycle; the objective is the sum of the clients' query latencies.

PSO (particle swarm optimisation) searches the (cut, server) of every client at once; the greedy
baseline places clients one after another, each at its best given the others; random draws both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOP_PER_CYCLE = 8.0  # a SIMD core: a modelling constant, the same for every node


@dataclass(frozen=True)
class Client:
    flops: tuple[float, ...]  # per block
    cut_bytes: tuple[int, ...]  # len n+1; k = 0 is the input, k = n the output
    ghz: float

    @property
    def n(self) -> int:
        return len(self.flops)


@dataclass(frozen=True)
class Env:
    clients: tuple[Client, ...]
    server_ghz: tuple[float, ...]
    bandwidth_bps: tuple[tuple[float, ...], ...]  # [client][server] bytes per second

    def latency(self, plan: list[tuple[int, int]]) -> float:
        """Sum of query latencies of ``plan`` = [(cut, server)] per client."""
        load = np.zeros(len(self.server_ghz))
        for (c, s), cl in zip(plan, self.clients, strict=True):
            if c < cl.n:
                load[s] += 1
        total = 0.0
        for (c, s), cl in zip(plan, self.clients, strict=True):
            local = sum(cl.flops[:c]) / (cl.ghz * 1e9 * FLOP_PER_CYCLE)
            if c >= cl.n:
                total += local
                continue
            share = self.server_ghz[s] * 1e9 * FLOP_PER_CYCLE / load[s]
            remote = sum(cl.flops[c:]) / share
            bw = self.bandwidth_bps[self.clients.index(cl)][s]
            total += local + remote + (cl.cut_bytes[c] + cl.cut_bytes[cl.n]) / bw
        return total


def random_plan(env: Env, rng: np.random.Generator) -> list[tuple[int, int]]:
    return [(int(rng.integers(cl.n + 1)), int(rng.integers(len(env.server_ghz)))) for cl in env.clients]


def greedy(env: Env) -> list[tuple[int, int]]:
    plan: list[tuple[int, int]] = [(cl.n, 0) for cl in env.clients]  # everyone local to start
    for i, cl in enumerate(env.clients):
        options = [(c, s) for c in range(cl.n + 1) for s in range(len(env.server_ghz))]
        plan[i] = min(options, key=lambda o: env.latency([*plan[:i], o, *plan[i + 1:]]))
    return plan


def pso(env: Env, rng: np.random.Generator, particles: int = 30, iterations: int = 60, w: float = 0.6,
        c1: float = 1.5, c2: float = 1.5) -> list[tuple[int, int]]:
    """Particle swarm over a continuous (cut, server) per client, rounded to a plan for evaluation."""
    lo = np.array([v for _ in env.clients for v in (0.0, 0.0)])
    hi = np.array([v for cl in env.clients for v in (cl.n + 0.999, len(env.server_ghz) - 0.001)])

    def decode(x: np.ndarray) -> list[tuple[int, int]]:
        return [(int(x[2 * i]), int(x[2 * i + 1])) for i in range(len(env.clients))]

    pos = rng.uniform(lo, hi, size=(particles, len(lo)))
    vel = rng.uniform(-(hi - lo), hi - lo, size=pos.shape) * 0.1
    cost = np.array([env.latency(decode(p)) for p in pos])
    best_pos, best_cost = pos.copy(), cost.copy()
    g = int(np.argmin(cost))
    g_pos, g_cost = pos[g].copy(), float(cost[g])
    for _ in range(iterations):
        r1, r2 = rng.random(pos.shape), rng.random(pos.shape)
        vel = w * vel + c1 * r1 * (best_pos - pos) + c2 * r2 * (g_pos - pos)
        pos = np.clip(pos + vel, lo, hi)
        cost = np.array([env.latency(decode(p)) for p in pos])
        better = cost < best_cost
        best_pos[better], best_cost[better] = pos[better], cost[better]
        if cost.min() < g_cost:
            g = int(np.argmin(cost))
            g_pos, g_cost = pos[g].copy(), float(cost[g])
    return decode(g_pos)


def seed002_env(models: list[tuple[tuple[float, ...], tuple[int, ...]]], rng: np.random.Generator) -> Env:
    """The seed's 12-node environment (2 clients, 5 edge, 5 cloud) with the given client models."""
    clients = tuple(Client(f, b, float(rng.uniform(1.1, 2.3))) for f, b in models)
    edge = [float(rng.uniform(4.2, 18.3)) for _ in range(5)]
    cloud = [float(rng.uniform(40, 120)) for _ in range(5)]
    bw = tuple(tuple([10e6] * 5 + [0.5e6] * 5) for _ in clients)
    return Env(clients, tuple(edge + cloud), bw)
