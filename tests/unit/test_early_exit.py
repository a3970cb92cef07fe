"""Seed 003's exits: entropy, the exit decision, the deployable parts, and a tiny trained model's exits vs T."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from workloads.early_exit import edgent_choose
from workloads.early_exit.model import (
    ExitConfig,
    TrainConfig,
    exit_decision,
    load_dataset,
    normalized_entropy,
    pack_split,
    save_part,
    softmax,
    train,
)

TINY = ExitConfig(widths=(8, 8, 8, 8, 8, 8, 16, 16, 16), exits=(2,))


def test_normalized_entropy_on_known_vectors() -> None:
    uniform = np.full((1, 10), 0.1)
    certain = np.eye(10)[:1]
    half = np.array([[0.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert normalized_entropy(uniform)[0] == pytest.approx(1.0)
    assert normalized_entropy(certain)[0] == pytest.approx(0.0, abs=1e-9)
    assert normalized_entropy(half)[0] == pytest.approx(np.log(2) / np.log(10))


def test_exit_decision_with_threshold_and_drop() -> None:
    confident = np.array([10.0] + [0.0] * 9)  # entropy ~0.003
    flat = np.zeros(10)  # entropy 1
    middling = np.array([2.0, 2.0] + [0.0] * 8)
    logits = np.stack([confident, flat, middling])
    ent = normalized_entropy(softmax(logits))
    assert ent[0] < 0.1 < ent[2] < 0.9 < ent[1] + 1e-9
    assert exit_decision(logits, 0.1).tolist() == [0, 1, 1]
    assert exit_decision(logits, 0.95).tolist() == [0, 1, 0]
    assert exit_decision(logits, 0.1, drop_threshold=0.99).tolist() == [0, 2, 1]  # hopeless ones dropped


def test_edgent_picks_the_most_accurate_exit_that_meets_the_target() -> None:
    prof = {"exits": [1, 2], "accuracy": {1: 0.8, 2: 0.95}, "bytes_at": {0: 1000, 1: 100_000},
            "ms": {("edge", 1, 1): 2.0, ("cloud", 1, 0): 1.0, ("edge", 2, 1): 1.0, ("cloud", 2, 1): 1.0,
                   ("edge", 2, 2): 20.0, ("cloud", 2, 0): 2.0}}
    fast = edgent_choose(prof, rate_mbit=100, rtt_ms=2, target_ms=10)
    assert (fast["exit"], fast["cut"]) == (2, 0)  # raw input to the cloud: 2 + 0.08 + 2 ms
    assert fast["predicted_ms"] == pytest.approx(4.08)
    slow = edgent_choose(prof, rate_mbit=0.5, rtt_ms=2, target_ms=10)
    assert (slow["exit"], slow["cut"]) == (1, 1)  # only the local early exit meets 10 ms at 0.5 Mbit/s
    hopeless = edgent_choose(prof, rate_mbit=0.5, rtt_ms=2, target_ms=1)
    assert hopeless["predicted_ms"] == 2.0  # nothing meets 1 ms: the fastest option


@pytest.fixture(scope="module")
def tiny_model(model_cache: Path) -> tuple[Path, dict[str, object]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TESTBED_MODEL_CACHE", str(model_cache))
    try:
        return train(TINY, load_dataset("digits", seed=0), TrainConfig(epochs=8, lr=0.05), seed=0)
    finally:
        mp.undo()


def test_parts_equal_the_whole_and_exits_grow_with_threshold(tiny_model: tuple[Path, dict[str, object]]) -> None:
    import torch

    from workloads.early_exit.model import _build_part

    ckpt, rec = tiny_model
    acc = rec["test_accuracy"]
    assert isinstance(acc, dict) and acc["exit_9"] > 0.5  # it learned something real
    data = load_dataset("digits", seed=0)
    x = torch.from_numpy(data.x_test).float().div(255)
    edge = _build_part(10, 0, str(save_part(ckpt, 0, 2, 2, True)))
    cloud = _build_part(10, 0, str(save_part(ckpt, 2, 9, 9)))
    whole = _build_part(10, 0, str(save_part(ckpt, 0, 9, 9)))
    with torch.inference_mode():
        logits, feats = pack_split(edge(x).numpy(), TINY, 2)
        split_out = cloud(torch.from_numpy(feats)).numpy()
        assert np.abs(split_out - whole(x).numpy()).max() <= 1e-5
    local = [int((exit_decision(logits, t) == 0).sum()) for t in (0.05, 0.1, 0.3, 0.5, 0.8)]
    assert local == sorted(local) and local[-1] > local[0]
    # the samples that exit early are the confident ones: more accurate than those passed on
    d = exit_decision(logits, 0.3)
    right = logits.argmax(1) == data.y_test
    if (d == 0).any() and (d == 1).any():
        assert right[d == 0].mean() >= right[d == 1].mean()


def test_cifar10_loader_reads_the_binary_version_and_refuses_pickles(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    rng = np.random.default_rng(0)
    recs = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        recs[name] = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        recs[name][:, 0] %= 10
        recs[name].tofile(root / name)
    d = load_dataset("cifar10", str(tmp_path))
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    first = recs["data_batch_1.bin"][0]
    assert d.y_train[0] == first[0] and (d.x_train[0, 1].ravel() == first[1 + 1024:1 + 2048]).all()  # green plane
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_dataset("cifar10", None)
    (root / "test_batch.bin").write_bytes(b"\0" * 100)  # not whole records
    with pytest.raises(ValueError, match="3073"):
        load_dataset("cifar10", str(tmp_path))
    # the python version is a pickle: refused, and the file is never opened as one
    py = tmp_path / "py" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[()]]:
            return (marker.touch, ())

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(py / name, "wb") as f:
            pickle.dump(Boom(), f)
    with pytest.raises(FileNotFoundError, match="pickled"):
        load_dataset("cifar10", str(tmp_path / "py"))
    assert not marker.exists()
