"""Seed 001 (§IV): schedule the layers of many deep-learning tasks onto capacity-limited edge servers.

Problem: maximise the number of deployed tasks, where deploying task j with its first k layers on
edge server i costs bandwidth ``b_ij >= 8 d_ij r_kj / Q_j`` (so the transfer of the intermediate
data to the cloud meets the latency bound Q_j) out of ``b_i V``, and compute ``l_kj d_ij`` out of
``c_i``. ``r_kj`` is the ratio of the data after layer k to the input, ``l_kj`` the work of the first
k layers per input byte; both come from real models (``task_types_from_models``).

Interpretation, where the seed's text is ambiguous (recorded in docs/design-notes.md):
* a task's input arrives at one to three edge servers (``d_ij > 0``) and it is deployed on all of them
  or not at all, as the offline algorithm's "deploys the task into all edge servers" reads;
* the online algorithm's threshold (its formula is garbled in the text) is the classic online-knapsack
  threshold of Zhou et al. that the seed's ln(Bmax/Bmin)+1 ratio comes from: accept a task whose
  bandwidth demand B is at most ``1 / Psi(z)`` with ``Psi(z) = (U e / L)^z (L / e)``, ``U = 1/Bmin``,
  ``L = 1/Bmax`` and ``z`` the used fraction of its busiest server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TaskType:
    """A CNN cut into ``N`` layers: ``r[k-1]`` data ratio and ``l[k-1]`` FLOP per input byte after k layers."""

    name: str
    r: tuple[float, ...]
    l: tuple[float, ...]  # noqa: E741 - the seed's own name

    @property
    def layers(self) -> int:
        return len(self.r)


@dataclass(frozen=True)
class Task:
    j: int
    kind: TaskType
    d: dict[int, float]  # edge server -> input bytes per second
    q_s: float = 0.2

    def demand(self, k: int, i: int) -> tuple[float, float]:
        """(bandwidth bit/s, compute FLOP/s) on server i with the first k layers there."""
        d = self.d[i]
        return 8 * d * self.kind.r[k - 1] / self.q_s, self.kind.l[k - 1] * d

    @property
    def k_m(self) -> int:
        """The seed's k_jm: the k maximising r_kj * l_kj."""
        return 1 + int(np.argmax(np.array(self.kind.r) * np.array(self.kind.l)))

    @property
    def d_max(self) -> float:
        return max(self.d.values())


@dataclass
class Edge:
    """Edge servers: capacity c_i (FLOP/s), bandwidth b_i (bit/s) and the congestion threshold V."""

    c: np.ndarray
    b: np.ndarray
    v: float = 0.8
    used_c: np.ndarray = field(init=False)
    used_b: np.ndarray = field(init=False)
    placed: dict[int, tuple[Task, int]] = field(default_factory=dict)  # j -> (task, k)

    def __post_init__(self) -> None:
        self.used_c = np.zeros_like(self.c)
        self.used_b = np.zeros_like(self.b)

    def fits(self, t: Task, k: int) -> bool:
        for i in t.d:
            bw, comp = t.demand(k, i)
            if self.used_b[i] + bw > self.b[i] * self.v or self.used_c[i] + comp > self.c[i]:
                return False
        return True

    def place(self, t: Task, k: int) -> None:
        for i in t.d:
            bw, comp = t.demand(k, i)
            self.used_b[i] += bw
            self.used_c[i] += comp
        self.placed[t.j] = (t, k)

    def remove(self, j: int) -> None:
        t, k = self.placed.pop(j)
        for i in t.d:
            bw, comp = t.demand(k, i)
            self.used_b[i] -= bw
            self.used_c[i] -= comp

    def utilisation(self, t: Task) -> float:
        return float(max(max(self.used_b[i] / (self.b[i] * self.v), self.used_c[i] / self.c[i]) for i in t.d))

    def copy_empty(self) -> Edge:
        """The same servers, nothing placed."""
        return Edge(self.c.copy(), self.b.copy(), self.v)


def _k_order(t: Task) -> list[int]:
    """k_jm first, then the other depths by distance from it."""
    return sorted(range(1, t.kind.layers + 1), key=lambda k: (abs(k - t.k_m), k))


def offline(tasks: list[Task], edge: Edge, k_rule: str = "seed") -> int:
    """The seed's offline algorithm; returns the number of tasks deployed.

    Tasks go in ascending order of their largest input. ``k_rule="seed"`` tries the seed's k_jm
    (maximum r_kj * l_kj) first and the other depths after it; ``"lightest"`` takes the depth that
    uses the smallest share of the tightest budget.
    """
    for t in sorted(tasks, key=lambda t: t.d_max):
        k: int | None
        if k_rule == "lightest":
            k = _lightest_fit(t, edge)
        else:
            k = next((kk for kk in _k_order(t) if edge.fits(t, kk)), None)
        if k is not None:
            edge.place(t, k)
    return len(edge.placed)


def fixed(tasks: list[Task], edge: Edge, k: int) -> int:
    """Fixed mode: the first k layers of every task at the edge, in arrival order."""
    for t in tasks:
        kk = min(k, t.kind.layers)
        if edge.fits(t, kk):
            edge.place(t, kk)
    return len(edge.placed)


def _lightest_fit(t: Task, edge: Edge) -> int | None:
    """Among the depths k that fit, the one taking the smallest share of the tightest budget."""
    ks = [k for k in range(1, t.kind.layers + 1) if edge.fits(t, k)]
    return min(ks, key=lambda kk: weight(t, kk, edge)) if ks else None


def weight(t: Task, k: int, edge: Edge) -> float:
    """The share of its tightest server budget (bandwidth b_i V or capacity c_i) task t takes with k layers."""
    return float(max(max(t.demand(k, i)[0] / (edge.b[i] * edge.v), t.demand(k, i)[1] / edge.c[i]) for i in t.d))


def online(arrivals: list[Task], edge: Edge, w_min: float, w_max: float) -> list[int]:
    """The seed's online algorithm; returns the number deployed after each arrival.

    Each task is worth 1 and weighs ``weight`` (its share of the tightest budget), at the depth k
    that weighs least among those that fit (FIFO and LBF pick k the same way). It is accepted when
    its value density 1/w reaches the threshold ``Psi(z) = (U e / L)^z (L / e)`` of its busiest
    server's utilisation z (U = 1/w_min, L = 1/w_max).
    """
    u, lo = 1.0 / w_min, 1.0 / w_max
    counts = []
    for t in arrivals:
        k = _lightest_fit(t, edge)
        if k is not None:
            psi = (u * math.e / lo) ** edge.utilisation(t) * (lo / math.e)
            if 1.0 / weight(t, k, edge) >= psi:
                edge.place(t, k)
        counts.append(len(edge.placed))
    return counts


def fifo(arrivals: list[Task], edge: Edge) -> list[int]:
    """Deploy every task; when it does not fit, evict the earliest deployed tasks on its servers."""
    counts = []
    for t in arrivals:
        k = _lightest_fit(t, edge)
        while k is None:
            victims = [j for j, (o, _) in edge.placed.items() if set(o.d) & set(t.d)]
            if not victims:
                break
            edge.remove(victims[0])  # dicts keep insertion order: the earliest first
            k = _lightest_fit(t, edge)
        if k is not None:
            edge.place(t, k)
        counts.append(len(edge.placed))
    return counts


def lbf(arrivals: list[Task], edge: Edge) -> list[int]:
    """Low bandwidth first: when full, evict the deployed task with the largest bandwidth demand, if
    it needs more than the newcomer."""
    counts = []
    for t in arrivals:
        k = _lightest_fit(t, edge)
        while k is None:
            on = [(max(o.demand(kk, i)[0] for i in o.d), j) for j, (o, kk) in edge.placed.items()
                  if set(o.d) & set(t.d)]
            mine = min(max(t.demand(kk, i)[0] for i in t.d) for kk in range(1, t.kind.layers + 1))
            if not on or max(on)[0] <= mine:
                break
            edge.remove(max(on)[1])
            k = _lightest_fit(t, edge)
        if k is not None:
            edge.place(t, k)
        counts.append(len(edge.placed))
    return counts


def make_tasks(types: list[TaskType], n: int, n_edges: int, rng: np.random.Generator, d_min: float = 100e3,
               d_max: float = 1e6, q_s: float = 0.2) -> list[Task]:
    """n tasks of random types, inputs of d_min..d_max bytes/s at 1-3 random edge servers."""
    out = []
    for j in range(n):
        servers = rng.choice(n_edges, size=int(rng.integers(1, 4)), replace=False)
        out.append(Task(j, types[int(rng.integers(len(types)))],
                        {int(i): float(rng.uniform(d_min, d_max)) for i in servers}, q_s))
    return out


def make_edge(n_edges: int, rng: np.random.Generator, gflops: float = 290.0, b_min_mbit: float = 10.0,
              b_max_mbit: float = 1000.0, v: float = 0.8) -> Edge:
    """Edge servers of the seed's setting: 290 GFLOP/s (Tegra K1), 10 Mbit/s - 1 Gbit/s uplinks."""
    return Edge(np.full(n_edges, gflops * 1e9), rng.uniform(b_min_mbit, b_max_mbit, n_edges) * 1e6, v)
