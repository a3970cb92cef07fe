"""Seed 002's partition-offloading in a multi-user, multi-server edge-cloud environment: PSO vs greedy and random.

Each client runs one model, cut once: blocks ``[0, c)`` on the client (the paper's P2), ``[c, n)`` on
one server (P1). A server shared by several clients splits its capacity among them. The objective is
the sum of the clients' query latencies.

The environment is held as seconds per block: on each client, and for each client's model on each
server. ``seed002_env`` draws the seed's synthetic setting (CPU in GHz, block work in FLOPs); the
``partition_offloading`` workload fills the same structure from block profiles measured on a
12-node testbed, then executes the chosen plans.

PSO (particle swarm optimisation) searches the (cut, server) of every client at once; the greedy
baseline places clients one after another, each at its best given the others; random draws both;
``exhaustive`` enumerates every joint plan (the optimum, for two clients).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

FLOP_PER_CYCLE = 8.0  # a SIMD core: a modelling constant, the same for every node

Plan = list[tuple[int, int]]  # (cut, server) per client


@dataclass(frozen=True)
class Client:
    local_s: tuple[float, ...]  # per block, on the client
    cut_bytes: tuple[int, ...]  # len n+1; k = 0 is the input, k = n the output

    @property
    def n(self) -> int:
        return len(self.local_s)


@dataclass(frozen=True)
class Env:
    clients: tuple[Client, ...]
    server_s: tuple[tuple[tuple[float, ...], ...], ...]  # [client][server][block]: an unshared server
    bandwidth_bps: tuple[tuple[float, ...], ...]  # [client][server] bytes per second
    rtt_s: tuple[tuple[float, ...], ...] | None = None  # [client][server] propagation round trip

    @property
    def n_servers(self) -> int:
        return len(self.bandwidth_bps[0])

    def per_client(self, plan: Plan) -> list[float]:
        """Each client's query latency (s) under ``plan``."""
        load = np.zeros(self.n_servers)
        for (c, s), cl in zip(plan, self.clients, strict=True):
            if c < cl.n:
                load[s] += 1
        out = []
        for i, ((c, s), cl) in enumerate(zip(plan, self.clients, strict=True)):
            t = sum(cl.local_s[:c])
            if c < cl.n:
                t += sum(self.server_s[i][s][c:]) * load[s]
                t += (cl.cut_bytes[c] + cl.cut_bytes[cl.n]) / self.bandwidth_bps[i][s]
                t += self.rtt_s[i][s] if self.rtt_s else 0.0
            out.append(t)
        return out

    def latency(self, plan: Plan) -> float:
        """Sum of query latencies (s) of ``plan``."""
        return sum(self.per_client(plan))

    def options(self, i: int) -> list[tuple[int, int]]:
        return [(c, s) for c in range(self.clients[i].n + 1) for s in range(self.n_servers)]


def random_plan(env: Env, rng: np.random.Generator) -> Plan:
    return [(int(rng.integers(cl.n + 1)), int(rng.integers(env.n_servers))) for cl in env.clients]


def greedy(env: Env) -> Plan:
    plan: Plan = [(cl.n, 0) for cl in env.clients]  # everyone local to start
    for i in range(len(env.clients)):
        plan[i] = min(env.options(i), key=lambda o: env.latency([*plan[:i], o, *plan[i + 1:]]))
    return plan


def exhaustive(env: Env) -> Plan:
    """Every joint plan; feasible for a few clients (the seed's two)."""
    best = min(itertools.product(*(env.options(i) for i in range(len(env.clients)))),
               key=lambda p: env.latency(list(p)))
    return list(best)


def pso(env: Env, rng: np.random.Generator, particles: int = 30, iterations: int = 60, w: float = 0.6,
        c1: float = 1.5, c2: float = 1.5) -> Plan:
    """Particle swarm over a continuous (cut, server) per client, rounded to a plan for evaluation."""
    lo = np.zeros(2 * len(env.clients))
    hi = np.array([v for cl in env.clients for v in (cl.n + 0.999, env.n_servers - 0.001)])

    def decode(x: np.ndarray) -> Plan:
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


ALGORITHMS = ("pso", "greedy", "random", "exhaustive")


def choose(name: str, env: Env, rng: np.random.Generator) -> Plan:
    if name == "pso":
        return pso(env, rng)
    if name == "greedy":
        return greedy(env)
    if name == "random":
        return random_plan(env, rng)
    if name == "exhaustive":
        return exhaustive(env)
    raise ValueError(f"unknown offloading algorithm {name!r}; known: {', '.join(ALGORITHMS)}")


def from_flops(flops: tuple[float, ...], ghz: float) -> tuple[float, ...]:
    return tuple(f / (ghz * 1e9 * FLOP_PER_CYCLE) for f in flops)


def seed002_env(models: list[tuple[tuple[float, ...], tuple[int, ...]]], rng: np.random.Generator) -> Env:
    """The seed's synthetic 12-node environment (2 clients, 5 edge, 5 cloud); ``models`` = (FLOPs, cut bytes)."""
    clients = tuple(Client(from_flops(f, float(rng.uniform(1.1, 2.3))), b) for f, b in models)
    ghz = [float(rng.uniform(4.2, 18.3)) for _ in range(5)] + [float(rng.uniform(40, 120)) for _ in range(5)]
    server_s = tuple(tuple(from_flops(f, g) for g in ghz) for f, _ in models)
    bw = tuple(tuple([10e6] * 5 + [0.5e6] * 5) for _ in clients)
    return Env(clients, server_s, bw)
