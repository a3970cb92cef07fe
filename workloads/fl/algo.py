"""Federated learning arithmetic: data splits, aggregators, update compression. Pure numpy, no testbed.

Aggregators share one base class: ``aggregate(global_w, updates)`` where each update is a
``ClientUpdate`` (the client's delta, or its gradient for FedSGD; its sample count; its staleness).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from testbed.registry import Registry


@dataclass
class ClientUpdate:
    client: str
    delta: np.ndarray  # new local weights - global weights (FedSGD: the gradient)
    n_samples: int
    staleness: int = 0


class Aggregator:
    """Turns the global weights and the round's client updates into the next global weights."""

    name: ClassVar[str] = ""
    client_mode: ClassVar[str] = "train"  # what clients compute: "train" (local epochs) or "gradient"

    def __init__(self, **params: Any) -> None:
        self.params = params

    def aggregate(self, global_w: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
        raise NotImplementedError


AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator")


def _weights(updates: list[ClientUpdate], staleness_exp: float = 0.0) -> np.ndarray:
    w = np.array([u.n_samples for u in updates], dtype=np.float64)
    if staleness_exp:
        w = w / (1.0 + np.array([u.staleness for u in updates])) ** staleness_exp
    out: np.ndarray = w / w.sum()
    return out


@AGGREGATORS.register("fedavg")
class FedAvg(Aggregator):
    """McMahan et al.: the sample-weighted mean of the clients' models (of their deltas, equivalently)."""

    name = "fedavg"

    def aggregate(self, global_w: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
        if not updates:
            return global_w
        w = _weights(updates, float(self.params.get("staleness_exp", 0.0)))
        step = np.sum([wi * u.delta for wi, u in zip(w, updates, strict=True)], axis=0)
        out: np.ndarray = (global_w + float(self.params.get("server_lr", 1.0)) * step).astype(np.float32)
        return out


@AGGREGATORS.register("fedprox")
class FedProx(FedAvg):
    """Li et al.: FedAvg's aggregation; the clients add (mu/2)||w - w_global||^2 to their loss."""

    name = "fedprox"


@AGGREGATORS.register("fedsgd")
class FedSGD(Aggregator):
    """One gradient per client on its whole local data; the server steps along their weighted mean."""

    name = "fedsgd"
    client_mode = "gradient"

    def aggregate(self, global_w: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
        if not updates:
            return global_w
        w = _weights(updates)
        g = np.sum([wi * u.delta for wi, u in zip(w, updates, strict=True)], axis=0)
        out: np.ndarray = (global_w - float(self.params.get("server_lr", 0.5)) * g).astype(np.float32)
        return out


@AGGREGATORS.register("trimmed_mean")
class TrimmedMean(Aggregator):
    """Coordinate-wise mean after dropping the ``trim`` fraction of largest and smallest values (robust)."""

    name = "trimmed_mean"

    def aggregate(self, global_w: np.ndarray, updates: list[ClientUpdate]) -> np.ndarray:
        if not updates:
            return global_w
        d = np.sort(np.stack([u.delta for u in updates]), axis=0)
        k = int(len(updates) * float(self.params.get("trim", 0.1)))
        kept = d[k:len(updates) - k] if len(updates) - 2 * k > 0 else d
        out: np.ndarray = (global_w + kept.mean(axis=0)).astype(np.float32)
        return out


# -- compression --------------------------------------------------------------------------------------
def compress(delta: np.ndarray, mode: str, topk_frac: float = 0.1) -> tuple[np.ndarray, dict[str, Any]]:
    """The wire form of an update: ``none`` (fp32), ``topk`` (int32 indices + fp32 values, as bytes) or
    ``int8`` (per-tensor scale)."""
    if mode == "none":
        return delta.astype(np.float32), {"codec": "none"}
    if mode == "topk":
        k = max(1, int(len(delta) * topk_frac))
        idx = np.argpartition(np.abs(delta), -k)[-k:].astype(np.int32)
        vals = delta[idx].astype(np.float32)
        return np.concatenate([idx.view(np.uint8), vals.view(np.uint8)]), {"codec": "topk", "k": k, "size": len(delta)}
    if mode == "int8":
        scale = float(np.abs(delta).max()) / 127.0 or 1.0
        return np.clip(np.rint(delta / scale), -127, 127).astype(np.int8), {"codec": "int8", "scale": scale}
    raise ValueError(f"unknown compression {mode!r}: none, topk or int8")


def decompress(payload: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    codec = meta.get("codec", "none")
    if codec == "none":
        return payload.astype(np.float32)
    if codec == "topk":
        k, n = int(meta["k"]), int(meta["size"])
        raw = payload.view(np.uint8)
        idx = raw[:4 * k].view(np.int32)
        vals = raw[4 * k:].view(np.float32)
        out = np.zeros(n, np.float32)
        out[idx] = vals
        return out
    if codec == "int8":
        return payload.astype(np.float32) * np.float32(meta["scale"])
    raise ValueError(f"unknown codec {codec!r}")


class ErrorFeedback:
    """What compression dropped is added to the next update (Stich et al.; Karimireddy et al.)."""

    def __init__(self) -> None:
        self.residual: np.ndarray | None = None

    def __call__(self, delta: np.ndarray, mode: str, topk_frac: float) -> tuple[np.ndarray, dict[str, Any]]:
        if mode == "none":
            return compress(delta, mode)
        corrected = delta + (self.residual if self.residual is not None else 0.0)
        payload, meta = compress(corrected, mode, topk_frac)
        self.residual = corrected - decompress(payload, meta)
        return payload, meta


# -- data splits --------------------------------------------------------------------------------------
def split(labels: np.ndarray, n_clients: int, how: str, rng: np.random.Generator, alpha: float = 0.5,
          shards_per_client: int = 2) -> list[np.ndarray]:
    """Indices per client: ``iid``, ``dirichlet`` (per-class proportions ~ Dir(alpha)) or ``shards``
    (sorted by label, cut into shards, each client gets ``shards_per_client``). Every client gets at
    least one sample."""
    n = len(labels)
    parts: list[np.ndarray]
    if how == "iid":
        parts = list(np.array_split(rng.permutation(n), n_clients))
    elif how == "dirichlet":
        parts_l: list[list[int]] = [[] for _ in range(n_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet([alpha] * n_clients)
            cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts_l[i] += chunk.tolist()
        parts = [np.array(q, dtype=np.int64) for q in parts_l]
    elif how == "shards":
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, n_clients * shards_per_client)
        pick = rng.permutation(len(shards))
        parts = [np.concatenate([shards[int(j)] for j in pick[i::n_clients]]) for i in range(n_clients)]
    else:
        raise ValueError(f"unknown split {how!r}: iid, dirichlet or shards")
    out = [np.asarray(q, dtype=np.int64) for q in parts]
    # no empty client: take one sample from the largest
    for i in range(len(out)):
        if len(out[i]) == 0:
            j = int(np.argmax([len(q) for q in out]))
            out[i], out[j] = out[j][-1:], out[j][:-1]
    return out
