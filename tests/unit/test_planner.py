"""Planners on hand-made profiles whose optimum is known."""

from __future__ import annotations

import pytest

from workloads.split.planner import PER_COMPUTE_MS, PLANNERS, PathState, SplitProfile, predict


def profile(up_mbit: float, *, cloud_fast: bool = False) -> SplitProfile:
    # 4 blocks; the data shrinks 8x after block 1 (like conv + pool), the device is 5x slower than the edge
    paths = {"d>e": PathState(up_mbit, 5.0), "e>d": PathState(up_mbit, 5.0), "e>c": PathState(100.0, 20.0),
             "c>e": PathState(100.0, 20.0), "d>c": PathState(min(up_mbit, 100.0), 25.0),
             "c>d": PathState(min(up_mbit, 100.0), 25.0)}
    return SplitProfile(device_ms=(50.0, 10.0, 50.0, 5.0), edge_ms=(10.0, 2.0, 10.0, 1.0),
                        cloud_ms=(1.0, 0.2, 1.0, 0.1) if cloud_fast else (10.0, 2.0, 10.0, 1.0),
                        cut_bytes=(800_000, 800_000, 100_000, 100_000, 4_000),
                        paths=paths, device_busy_w=6.4, device_idle_w=2.7, tx_uj_per_bit=0.3)


def brute(p: SplitProfile, two_cuts: bool) -> tuple[int, int]:
    plans = [(a, b) for a in range(p.n + 1) for b in range(a, p.n + 1)] if two_cuts else [(k, p.n) for k in
                                                                                          range(p.n + 1)]
    return min(plans, key=lambda c: predict(p, *c).latency_ms)


@pytest.mark.parametrize("up", [1000.0, 100.0, 10.0, 1.0, 0.1])
def test_neurosurgeon_and_exhaustive_find_the_optimum(up: float) -> None:
    p = profile(up, cloud_fast=True)
    ns = PLANNERS.get("neurosurgeon_latency")().choose(p)
    ex = PLANNERS.get("exhaustive")().choose(p)
    assert predict(p, *ns).latency_ms == pytest.approx(predict(p, *brute(p, False)).latency_ms)
    assert predict(p, *ex).latency_ms == pytest.approx(predict(p, *brute(p, True)).latency_ms)
    assert predict(p, *ex).latency_ms <= predict(p, *ns).latency_ms + 1e-9


def test_cut_moves_toward_the_device_as_the_uplink_falls() -> None:
    cuts = [PLANNERS.get("neurosurgeon_latency")().choose(profile(up))[0] for up in (1000, 100, 10, 1, 0.1)]
    assert cuts == sorted(cuts), cuts
    assert cuts[0] == 0 and cuts[-1] == 4  # fast link: all on the edge; crawling link: all on the device


def test_known_plans_and_arithmetic() -> None:
    p = profile(100.0)
    assert PLANNERS.get("device_only")().choose(p) == (4, 4)
    assert PLANNERS.get("edge_only")().choose(p) == (0, 4)
    assert PLANNERS.get("cloud_only")().choose(p) == (0, 0)
    assert PLANNERS.get("fixed")(k=2).choose(p) == (2, 4)
    assert PLANNERS.get("fixed")(k=2, tier="cloud").choose(p) == (2, 2)
    dev = predict(p, 4, 4)
    assert dev.latency_ms == pytest.approx(115.0 + PER_COMPUTE_MS)
    assert dev.device_energy_j == pytest.approx(6.4 * (0.115 + PER_COMPUTE_MS / 1e3))
    split = predict(p, 2, 4)  # 60 ms device, 100 kB up at 100 Mbit, 11 ms edge, 4 kB back
    up = PathState(100.0, 5.0).transfer_ms(100_000)
    assert split.parts["up"] == pytest.approx(up) and split.latency_ms == pytest.approx(
        60 + up + 11 + 2 * PER_COMPUTE_MS + PathState(100.0, 5.0).transfer_ms(4_000))
    with pytest.raises(ValueError):
        predict(p, 3, 2)


def test_energy_planner_prefers_less_radio_on_a_costly_link() -> None:
    p = profile(1.0)
    c = PLANNERS.get("neurosurgeon_energy")().choose(p)
    e = predict(p, *c).device_energy_j
    assert all(e <= predict(p, k, p.n).device_energy_j + 1e-12 for k in range(p.n + 1))


def test_layer_regression_recovers_a_linear_law() -> None:
    from workloads.split.regression import LayerRegression

    rows = [("conv", f, b, 3.0 * f / 1e9 + 0.5 * b / 1e6 + 0.1) for f, b in
            [(1e9, 1e6), (2e9, 5e5), (5e8, 2e6), (3e9, 1e5)]]
    rows += [("act", 0, b, 0.02 * b / 1e6) for b in (1e6, 2e6, 4e6)]
    reg = LayerRegression().fit(rows)
    assert reg.predict("conv", 4e9, 1e6) == pytest.approx(12.0 + 0.5 + 0.1, rel=1e-6)
    assert reg.predict("act", 0, 3e6) == pytest.approx(0.06, rel=1e-6)
    assert reg.predict("unknown_kind", 1e9, 0, scale=2.0) > 0  # falls back to the all-kinds model
