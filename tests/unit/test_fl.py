"""Federated learning arithmetic on fixed tensors: aggregators, compression with error feedback, splits."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.fl.algo import AGGREGATORS, ClientUpdate, ErrorFeedback, compress, decompress, split


def ups(*deltas: list[float], n: tuple[int, ...] | None = None) -> list[ClientUpdate]:
    return [ClientUpdate(f"c{i}", np.array(d, np.float32), (n or (1,) * len(deltas))[i]) for i, d in enumerate(deltas)]


def test_fedavg_is_the_sample_weighted_mean() -> None:
    w = np.array([1.0, 1.0], np.float32)
    out = AGGREGATORS.get("fedavg")().aggregate(w, ups([1.0, 0.0], [4.0, 2.0], n=(1, 3)))
    assert out == pytest.approx([1 + 0.25 * 1 + 0.75 * 4, 1 + 0.75 * 2])
    assert AGGREGATORS.get("fedprox")().aggregate(w, ups([2.0, 2.0])) == pytest.approx([3.0, 3.0])
    assert AGGREGATORS.get("fedavg")().aggregate(w, []) is w  # nobody contributed: the model stays


def test_fedsgd_steps_against_the_mean_gradient() -> None:
    w = np.zeros(2, np.float32)
    out = AGGREGATORS.get("fedsgd")(server_lr=0.1).aggregate(w, ups([1.0, 2.0], [3.0, 4.0]))
    assert out == pytest.approx([-0.2, -0.3])


def test_trimmed_mean_ignores_the_outlier() -> None:
    w = np.zeros(1, np.float32)
    deltas = [[1.0], [1.1], [0.9], [1.0], [1000.0]]
    out = AGGREGATORS.get("trimmed_mean")(trim=0.2).aggregate(w, ups(*deltas))
    assert out == pytest.approx([1.0333333])
    assert AGGREGATORS.get("fedavg")().aggregate(w, ups(*deltas))[0] > 100


def test_compression_round_trips_and_sizes() -> None:
    d = np.array([0.1, -3.0, 0.2, 2.0, 0.0, -0.05, 0.3, 1.0, 0.01, 0.02], np.float32)
    p, m = compress(d, "topk", 0.2)
    assert p.nbytes == 2 * (4 + 4)  # two (int32 index, fp32 value) pairs
    assert decompress(p, m).tolist() == pytest.approx([0, -3.0, 0, 2.0, 0, 0, 0, 0, 0, 0])
    p, m = compress(d, "int8")
    assert p.dtype == np.int8 and np.abs(decompress(p, m) - d).max() <= 3.0 / 127 / 2 + 1e-6
    assert decompress(*compress(d, "none")).tolist() == pytest.approx(d.tolist())


def test_error_feedback_sends_what_was_dropped_later() -> None:
    ef = ErrorFeedback()
    d = np.array([1.0, 0.4, 0.0], np.float32)
    sent = [decompress(*ef(d, "topk", 1 / 3)) for _ in range(3)]
    # the 0.4 coordinate is held back, accumulates and goes out once it is the largest (1.2 in round 3)
    assert sum(sent).tolist() == pytest.approx([2.0, 1.2, 0.0])
    # nothing is lost: what was sent plus what is still held equals what was computed
    assert ef.residual is not None and (sum(sent) + ef.residual).tolist() == pytest.approx((3 * d).tolist())


def test_splits_cover_every_sample_once_and_skew_labels() -> None:
    y = np.repeat(np.arange(10), 30)
    rng = np.random.default_rng(0)
    for how in ("iid", "dirichlet", "shards"):
        parts = split(y, 12, how, rng, alpha=0.1)
        assert len(parts) == 12 and all(len(p) for p in parts)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    iid = np.mean([len(np.unique(y[p])) for p in split(y, 12, "iid", rng)])
    shards = np.mean([len(np.unique(y[p])) for p in split(y, 12, "shards", rng, shards_per_client=2)])
    assert shards <= 3 < iid
