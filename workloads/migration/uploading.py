"""Seed 002's partition-uploading plans: which blocks to upload to the server, in which order, while the
client keeps querying (IONN; Shin et al., "Enhanced partitioning of DNN layers for uploading", 2019).

A query runs each block on the client or, once its weights have arrived, on the server; the best
placement for the uploaded set is a two-state shortest path over the chain (``query_ms``). Plans:

* ``direct``: the blocks the final optimal plan offloads, uploaded as one partition;
* ``ionn``: shortest paths with the server cost of not-yet-uploaded blocks inflated by a penalty factor
  times their upload time, for IONN's factors 1, 0.5, 0.25, ..., 0.016, 0; each path's new server blocks
  form the next partitions;
* ``efficiency``: greedily the contiguous range of not-yet-uploaded blocks with the highest upload
  efficiency (query-time reduction per upload ms), until no range helps;
* ``recursive``: the efficiency plan with every partition split recursively in two while uploading
  the halves in their better order lowers the cumulative query delay.

The cumulative query delay is the area under "query latency over time" while queries run back to
back, up to a common horizon (every plan then runs at its final latency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IONN_PENALTIES = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.016, 0.0)


@dataclass(frozen=True)
class MigrationProfile:
    """Per-block client and server ms, bytes at each cut (len n+1), upload ms per block, link model."""

    client_ms: tuple[float, ...]
    server_ms: tuple[float, ...]
    cut_bytes: tuple[int, ...]
    upload_ms: tuple[float, ...]
    up_ms_per_byte: float
    down_ms_per_byte: float
    delay_ms: float

    @property
    def n(self) -> int:
        return len(self.client_ms)

    def upload_time(self, plan: list[tuple[int, int]]) -> float:
        """ms to upload the partitions of ``plan`` one after another (weights plus one delay each)."""
        return sum(sum(self.upload_ms[a:b]) + self.delay_ms for a, b in plan)

    def up(self, nbytes: int) -> float:
        return nbytes * self.up_ms_per_byte + self.delay_ms

    def down(self, nbytes: int) -> float:
        return nbytes * self.down_ms_per_byte + self.delay_ms


def query_plan(p: MigrationProfile, uploaded: frozenset[int], penalty: float = 0.0) -> tuple[float, list[int]]:
    """Fastest placement of one query: (ms, blocks run on the server). Input and output live on the client.

    Not-yet-uploaded blocks may run on the server only with ``penalty > 0`` (IONN's planning view), at
    ``server_ms + penalty * upload_ms``; with ``penalty == 0`` only uploaded blocks may.
    """
    inf = math.inf
    c, s = 0.0, inf  # best ms so far with the current tensor on the client / on the server
    back_c: list[str] = []
    back_s: list[str] = []
    for k in range(p.n):
        avail = k in uploaded or penalty > 0
        cost_s = p.server_ms[k] + (0.0 if k in uploaded else penalty * p.upload_ms[k]) if avail else inf
        to_c = min((c, "c"), (s + p.down(p.cut_bytes[k]), "s"))
        to_s = min((s, "s"), (c + p.up(p.cut_bytes[k]), "c"))
        c, s = to_c[0] + p.client_ms[k], to_s[0] + cost_s
        back_c.append(to_c[1])
        back_s.append(to_s[1])
    end_s = s + p.down(p.cut_bytes[p.n])
    total, where = (c, "c") if c <= end_s else (end_s, "s")
    on_server = []
    for k in range(p.n - 1, -1, -1):
        if where == "s":
            on_server.append(k)
        where = (back_s if where == "s" else back_c)[k]
    # the real cost, without the planning penalty
    real = _cost(p, set(on_server))
    return (real if penalty > 0 else total), sorted(on_server)


def _cost(p: MigrationProfile, server: set[int]) -> float:
    ms, here = 0.0, "c"
    for k in range(p.n):
        want = "s" if k in server else "c"
        if want != here:
            ms += p.up(p.cut_bytes[k]) if want == "s" else p.down(p.cut_bytes[k])
            here = want
        ms += p.server_ms[k] if want == "s" else p.client_ms[k]
    return ms + (p.down(p.cut_bytes[p.n]) if here == "s" else 0.0)


def query_ms(p: MigrationProfile, uploaded: frozenset[int]) -> float:
    return query_plan(p, uploaded)[0]


def _runs(blocks: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for b in sorted(blocks):
        if out and out[-1][1] == b:
            out[-1] = (out[-1][0], b + 1)
        else:
            out.append((b, b + 1))
    return out


def plan_direct(p: MigrationProfile) -> list[tuple[int, int]]:
    final = query_plan(p, frozenset(range(p.n)))[1]
    return _runs(final)


def plan_ionn(p: MigrationProfile) -> list[tuple[int, int]]:
    uploaded: set[int] = set()
    plan: list[tuple[int, int]] = []
    for pen in IONN_PENALTIES:
        if pen == 0.0:
            new = [b for b in query_plan(p, frozenset(range(p.n)))[1] if b not in uploaded]
        else:
            new = [b for b in query_plan(p, frozenset(uploaded), pen)[1] if b not in uploaded]
        for run in _runs(new):
            plan.append(run)
            uploaded.update(range(*run))
    return plan


def plan_efficiency(p: MigrationProfile) -> list[tuple[int, int]]:
    uploaded: set[int] = set()
    plan: list[tuple[int, int]] = []
    while True:
        now = query_ms(p, frozenset(uploaded))
        best, best_eff = None, 0.0
        free = [b for b in range(p.n) if b not in uploaded]
        for a_i, a in enumerate(free):
            for b in free[a_i:]:
                if b > a and b - 1 in uploaded:
                    break
                run = (a, b + 1)
                if any(x in uploaded for x in range(*run)):
                    break
                gain = now - query_ms(p, frozenset(uploaded | set(range(*run))))
                eff = gain / p.upload_time([run])
                if eff > best_eff + 1e-12:
                    best, best_eff = run, eff
        if best is None:
            return plan
        plan.append(best)
        uploaded.update(range(*best))


def cumulative_delay(p: MigrationProfile, plan: list[tuple[int, int]], horizon_ms: float) -> float:
    """Area under query latency over time (ms * ms), queries back to back, uploads in plan order."""
    t, area, uploaded = 0.0, 0.0, frozenset[int]()
    events = []
    for run in plan:
        t += p.upload_time([run])
        events.append((t, frozenset(range(*run))))
    t = 0.0
    for at, blocks in [*events, (horizon_ms, frozenset())]:
        end = min(at, horizon_ms)
        if end > t:
            area += query_ms(p, uploaded) * (end - t)
            t = end
        uploaded = uploaded | blocks
        if t >= horizon_ms:
            break
    return area


def plan_recursive(p: MigrationProfile, horizon_ms: float | None = None) -> list[tuple[int, int]]:
    base = plan_efficiency(p)
    h = horizon_ms or p.upload_time(base) * 1.5

    def split(plan: list[tuple[int, int]]) -> list[tuple[int, int]]:
        best, best_area = plan, cumulative_delay(p, plan, h)
        for i, (a, b) in enumerate(plan):
            if b - a < 2:
                continue
            for m in range(a + 1, b):
                for halves in (((a, m), (m, b)), ((m, b), (a, m))):
                    cand = [*plan[:i], *halves, *plan[i + 1:]]
                    area = cumulative_delay(p, cand, h)
                    if area < best_area - 1e-9:
                        best, best_area = cand, area
        return best if best is plan else split(best)

    return split(base)


PLANS = {"direct": plan_direct, "ionn": plan_ionn, "efficiency": plan_efficiency, "recursive": plan_recursive}
