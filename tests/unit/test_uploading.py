"""Seed 002's partition-uploading plans on hand-made profiles."""

from __future__ import annotations

import itertools

import pytest

from workloads.migration.uploading import (
    PLANS,
    MigrationProfile,
    _cost,
    cumulative_delay,
    plan_recursive,
    query_plan,
)


def profile() -> MigrationProfile:
    # 6 blocks; the client is 10x slower; data shrinks after block 1; weights are heavy in the last blocks
    return MigrationProfile(client_ms=(40, 20, 30, 30, 5, 5), server_ms=(4, 2, 3, 3, 0.5, 0.5),
                            cut_bytes=(150_000, 800_000, 200_000, 100_000, 50_000, 10_000, 4_000),
                            upload_ms=(2, 4, 20, 20, 200, 400), up_ms_per_byte=1e-4, down_ms_per_byte=1e-4,
                            delay_ms=2.0)


def test_query_plan_is_the_brute_force_optimum() -> None:
    p = profile()
    for uploaded in (frozenset(), frozenset({0, 1}), frozenset({2, 3, 4}), frozenset(range(6))):
        ms, server = query_plan(p, uploaded)
        assert set(server) <= uploaded
        best = min(_cost(p, set(s)) for r in range(len(uploaded) + 1) for s in itertools.combinations(uploaded, r))
        assert ms == pytest.approx(best)


def test_plans_upload_the_final_server_set_and_order_as_the_paper() -> None:
    p = profile()
    final = set(query_plan(p, frozenset(range(6)))[1])
    plans = {k: f(p) for k, f in PLANS.items() if k != "recursive"}
    h = 1.2 * max(sum(sum(p.upload_ms[a:b]) + p.delay_ms for a, b in pl) for pl in plans.values())
    plans["recursive"] = plan_recursive(p, h)
    assert set().union(*[set(range(a, b)) for a, b in plans["direct"]]) == final
    area = {k: cumulative_delay(p, pl, h) for k, pl in plans.items()}
    assert area["recursive"] <= area["efficiency"] + 1e-9
    assert area["efficiency"] <= area["ionn"] + 1e-9
    assert area["ionn"] <= area["direct"] + 1e-9
    assert len(plans["recursive"]) >= len(plans["efficiency"])


def test_cumulative_delay_integrates_latency_over_time() -> None:
    p = profile()
    none = cumulative_delay(p, [], 1000.0)
    assert none == pytest.approx(query_plan(p, frozenset())[0] * 1000.0)
