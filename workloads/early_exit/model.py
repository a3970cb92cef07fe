"""Seed 003's exit CNN: nine convolutional blocks, eight local exit positions and a cloud exit.

Each block is (conv 3x3 + batch norm + ReLU) x 2; feature maps are halved by average pooling after
blocks 3 and 6. An exit head is average pooling + one fully connected layer, like the cloud head.
SEM-k carries one local exit after block k; the MEM carries all eight. Training sums the cross-entropy
of every exit (equal weights by default), with SGD as in the seed's Table 1.

Data: scikit-learn's bundled digits (1797 real 8x8 images) by default, or CIFAR-10 from a local
directory in its python format. Nothing is downloaded. Trained checkpoints are cached by a hash of
everything that shapes them, so a second run (or a test) loads instead of retraining.

``ExitPart`` is what a node deploys: blocks ``[start, end)`` and, optionally, one head. Its output
packs the head's logits and the flattened features (``pack``/``unpack``) so one tensor crosses the
compute-process boundary.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from testbed.workload import MODELS, ModelDef

N_BLOCKS = 9
POOL_AFTER = (3, 6)  # blocks after which feature maps are halved


@dataclass(frozen=True)
class ExitConfig:
    in_channels: int = 1
    image_size: int = 8
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 16, 16, 32, 32, 32, 64, 64, 64)
    exits: tuple[int, ...] = (1,)  # local exit after these blocks (1..8)

    def feature_shape(self, after_block: int) -> tuple[int, int, int]:
        size = self.image_size
        for p in POOL_AFTER:
            if after_block >= p:
                size //= 2
        return (self.widths[after_block - 1] if after_block else self.in_channels, size, size)


def config_from_dict(d: dict[str, Any]) -> ExitConfig:
    return ExitConfig(int(d["in_channels"]), int(d["image_size"]), int(d["num_classes"]),
                      tuple(int(w) for w in d["widths"]), tuple(int(k) for k in d["exits"]))


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Seed 003 eq. (1): -sum p log p / log |L|, per row; 0 = certain, 1 = uniform."""
    p = np.clip(probs, 1e-12, 1.0)
    return np.asarray(-(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1]))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def exit_decision(logits: np.ndarray, threshold: float, drop_threshold: float | None = None) -> np.ndarray:
    """Per sample: 0 = exit locally (entropy < T), 1 = continue to the cloud, 2 = drop (entropy > drop)."""
    ent = normalized_entropy(softmax(logits))
    out = np.where(ent < threshold, 0, 1)
    if drop_threshold is not None:
        out = np.where((out == 1) & (ent > drop_threshold), 2, out)
    return out


def _build_modules(cfg: ExitConfig) -> Any:
    from torch import nn

    blocks = nn.ModuleList()
    c_in = cfg.in_channels
    for i, w in enumerate(cfg.widths):
        layers: list[nn.Module] = [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                   nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        if i + 1 in POOL_AFTER:
            layers.append(nn.AvgPool2d(2))
        blocks.append(nn.Sequential(*layers))
        c_in = w

    def head(c: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, cfg.num_classes))

    heads = nn.ModuleDict({str(k): head(cfg.widths[k - 1]) for k in cfg.exits})
    heads[str(N_BLOCKS)] = head(cfg.widths[-1])  # the cloud exit
    return blocks, heads


def _model_class() -> Any:
    from torch import nn

    class ExitCNN(nn.Module):
        """The whole network, for training: returns the logits of every exit (local ones, then cloud)."""

        def __init__(self, cfg: ExitConfig) -> None:
            super().__init__()
            self.cfg = cfg
            self.blocks, self.heads = _build_modules(cfg)

        def forward(self, x: Any) -> list[Any]:
            outs = []
            for i, b in enumerate(self.blocks, start=1):
                x = b(x)
                if str(i) in self.heads:
                    outs.append(self.heads[str(i)](x))
            return outs

    return ExitCNN


def _part_class() -> Any:
    import torch
    from torch import nn

    class ExitPart(nn.Module):
        """Blocks ``[start, end)`` and optionally one exit head: the features, the logits, or both packed
        as [logits | flattened features] (``keep_features``)."""

        def __init__(self, cfg: ExitConfig, start: int, end: int, head: int | None, keep_features: bool) -> None:
            super().__init__()
            self.cfg, self.start, self.end, self.head, self.keep = cfg, start, end, head, keep_features
            blocks, heads = _build_modules(cfg)
            self.blocks = nn.ModuleList(blocks[start:end])
            self.heads = nn.ModuleDict({str(head): heads[str(head)]} if head is not None else {})

        def forward(self, x: Any) -> Any:
            if self.start == 0:
                x = (x - 0.5) / 0.5  # uint8 frames arrive scaled to [0, 1]
            for b in self.blocks:
                x = b(x)
            if self.head is None:
                return x
            logits = self.heads[str(self.head)](x)
            return torch.cat([logits, x.flatten(1)], dim=1) if self.keep else logits

    return ExitPart


def pack_split(out: np.ndarray, cfg: ExitConfig, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Split an ``ExitPart`` output into (logits, features shaped as the next block's input)."""
    c = cfg.num_classes
    return out[:, :c], out[:, c:].reshape(out.shape[0], *cfg.feature_shape(end))


# -- checkpoints ---------------------------------------------------------------------------------------
def save_part(ckpt: Path, start: int, end: int, head: int | None, keep_features: bool = False) -> Path:
    """Write (once) the deployable part of a trained checkpoint, loaded by the ``exit_part`` model."""
    import torch

    out = ckpt.parent / "parts" / f"{ckpt.stem}-{start}-{end}-{head}-{int(keep_features)}.pt"
    if out.exists():
        return out
    full = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = config_from_dict(full["config"])
    part = _part_class()(cfg, start, end, head, keep_features)
    sd = {}
    for k in part.state_dict():
        kind, idx, rest = k.split(".", 2)
        src = f"blocks.{int(idx) + start}.{rest}" if kind == "blocks" else k
        sd[k] = full["state_dict"][src]
    part.load_state_dict(sd)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"config": asdict(cfg), "start": start, "end": end, "head": head, "keep": keep_features,
                "state_dict": part.state_dict()}, tmp)
    tmp.replace(out)
    return out


def _build_part(num_classes: int, seed: int, weights_path: str | None = None) -> Any:
    import torch

    if weights_path is None:  # an untrained SEM-1 edge part (calibration probes only)
        torch.manual_seed(seed)
        return _part_class()(ExitConfig(), 0, 1, 1, True).eval()
    d = torch.load(weights_path, map_location="cpu", weights_only=True)
    cfg = config_from_dict(d["config"])
    part = _part_class()(cfg, d["start"], d["end"], d["head"], d["keep"])
    part.load_state_dict(d["state_dict"])
    return part.eval()


MODELS.register("exit_part")(ModelDef("exit_part", (1, 8, 8), 10, _build_part))


# -- data ------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # uint8, N x C x H x W
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def load_dataset(name: str, data_dir: str | None = None, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """``digits`` (scikit-learn's bundled copy) or ``cifar10`` (the binary version's batches under ``data_dir``;
    the python version is pickled and is refused)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.clip(np.rint(d.images * (255 / 16)), 0, 255).astype(np.uint8)[:, None]
        y = d.target.astype(np.int64)
        idx = np.random.default_rng(seed).permutation(len(y))
        n_test = int(len(y) * test_fraction)
        te, tr = idx[:n_test], idx[n_test:]
        return Dataset("digits", x[tr], y[tr], x[te], y[te], {"source": "sklearn.datasets.load_digits (bundled)"})
    if name == "cifar10":
        if not data_dir:
            raise FileNotFoundError("cifar10 needs data_dir: the folder holding CIFAR-10's binary version "
                                    "(data_batch_1.bin..data_batch_5.bin, test_batch.bin)")
        root = Path(data_dir).expanduser().resolve()
        if (root / "cifar-10-batches-bin").is_dir():
            root = root / "cifar-10-batches-bin"
        if not (root / "data_batch_1.bin").exists() and ((root / "data_batch_1").exists()
                                                        or (root / "cifar-10-batches-py").is_dir()):
            raise FileNotFoundError(f"{root} holds CIFAR-10's python version, which is pickled: unpickling runs "
                                    "code from the file, so it is not read. Use the binary version "
                                    "(cifar-10-binary.tar.gz: data_batch_1.bin..5.bin, test_batch.bin)")

        def batch(f: str) -> tuple[np.ndarray, np.ndarray]:
            # the binary version: records of one label byte and 3072 pixel bytes (R, G, B planes of 32x32)
            p = root / f
            if not p.exists():
                raise FileNotFoundError(f"{p} is missing (CIFAR-10 binary version: data_batch_1..5.bin, "
                                        "test_batch.bin)")
            raw = np.fromfile(p, dtype=np.uint8)
            if raw.size == 0 or raw.size % 3073:
                raise ValueError(f"{p}: {raw.size} bytes is not a whole number of CIFAR-10 records (3073 bytes)")
            rec = raw.reshape(-1, 3073)
            return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), rec[:, 0].astype(np.int64)

        parts = [batch(f"data_batch_{i}.bin") for i in range(1, 6)]
        xt, yt = batch("test_batch.bin")
        return Dataset("cifar10", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                       xt, yt, {"source": str(root)})
    raise ValueError(f"unknown dataset {name!r}; known: digits, cifar10")


# -- training ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    lr: float = 0.1  # the seed's Table 1: lr 0.1, momentum 0.9, weight decay 1e-4, batch 32
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 32
    loss_weights: tuple[float, ...] | None = None  # per exit (local exits in order, then cloud); None = equal
    max_train_samples: int | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("TESTBED_MODEL_CACHE", Path.home() / ".cache" / "testbed" / "models"))


def train(cfg: ExitConfig, data: Dataset, tc: TrainConfig, seed: int) -> tuple[Path, dict[str, Any]]:
    """Train (or load from the cache) one exit model; returns the checkpoint and its training record."""
    import torch
    from torch import nn

    key = json.dumps({"cfg": asdict(cfg), "train": asdict(tc), "data": data.name, "n": len(data.y_train),
                      "seed": seed, "v": 1}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir() / f"exitcnn-{data.name}-{digest}.pt"
    if path.exists():
        rec = torch.load(path, map_location="cpu", weights_only=True)
        return path, dict(rec["record"], cached=True)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    model = _model_class()(cfg)
    n_exits = len(cfg.exits) + 1
    weights = tc.loss_weights or (1.0,) * n_exits
    if len(weights) != n_exits:
        raise ValueError(f"loss_weights has {len(weights)} entries; this model has {n_exits} exits")
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc.epochs)
    x = torch.from_numpy(data.x_train[:tc.max_train_samples]).float().div(255).sub(0.5).div(0.5)
    y = torch.from_numpy(data.y_train[:tc.max_train_samples])
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(tc.epochs):
        model.train()
        for idx in torch.split(torch.randperm(len(y), generator=gen), tc.batch_size):
            outs = model(x[idx])
            loss = torch.stack([w * loss_fn(o, y[idx]) for w, o in zip(weights, outs, strict=True)]).sum()
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        sched.step()
    model.eval()
    with torch.inference_mode():
        xt = torch.from_numpy(data.x_test).float().div(255).sub(0.5).div(0.5)
        outs = model(xt)
    acc = {f"exit_{k}": float((o.argmax(1).numpy() == data.y_test).mean())
           for k, o in zip([*cfg.exits, N_BLOCKS], outs, strict=True)}
    record = {"test_accuracy": acc, "epochs": tc.epochs, "train_samples": len(y)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": asdict(cfg), "state_dict": model.state_dict(), "record": record}, tmp)
    tmp.replace(path)
    return path, dict(record, cached=False)
