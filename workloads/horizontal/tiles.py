"""Horizontal splits of one CNN over several devices: receptive-field arithmetic, tiles and bands, exact execution.

A network is read as a list of *ops*: spatial ones (Conv2d, MaxPool2d, AvgPool2d) whose output rows
and columns depend on a window of input rows and columns, pointwise ones (ReLU, LeakyReLU, BatchNorm2d
in eval mode, Dropout) and, after the feature extractor, a head (pooling, flatten, Linear layers).

``trace`` walks a rectangle of some op's output back to the input: for every op, which input rows and
columns (clipped to the tensor) it reads and how much padding each side needs, so a device can compute
exactly its part with padding 0 after padding its region itself. That is DeepThings' Fused Tile
Partitioning (a grid of tiles through the first L ops) and, one op group at a time, MoDNN's row bands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Range = tuple[int, int]  # [lo, hi)


@dataclass(frozen=True)
class Op:
    """One op of the feature extractor: kind ``conv``, ``maxpool``, ``avgpool`` or ``point``."""

    index: int
    kind: str
    k: tuple[int, int] = (1, 1)
    s: tuple[int, int] = (1, 1)
    p: tuple[int, int] = (0, 0)
    d: tuple[int, int] = (1, 1)

    def out_size(self, n: int, axis: int) -> int:
        if self.kind == "point":
            return n
        return (n + 2 * self.p[axis] - self.d[axis] * (self.k[axis] - 1) - 1) // self.s[axis] + 1

    def needs(self, out: Range, n_in: int, axis: int) -> tuple[Range, tuple[int, int]]:
        """Input range (clipped to ``[0, n_in)``) and (pad before, pad after) for output range ``out``."""
        if self.kind == "point":
            return out, (0, 0)
        lo = out[0] * self.s[axis] - self.p[axis]
        hi = (out[1] - 1) * self.s[axis] - self.p[axis] + self.d[axis] * (self.k[axis] - 1) + 1
        return (max(lo, 0), min(hi, n_in)), (max(0, -lo), max(0, hi - n_in))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def ops_of(features: Any) -> list[Op]:
    """The ops of a feature extractor (an ``nn.Sequential``, nested ones flattened)."""
    from torch import nn

    out: list[Op] = []
    for m in flat_modules(features):
        i = len(out)
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise ValueError(f"op {i}: only numeric zero padding is supported, got {m.padding!r}")
            out.append(Op(i, "conv", _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)))
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            if m.ceil_mode:
                raise ValueError(f"op {i}: ceil_mode pooling is not supported")
            if isinstance(m, nn.AvgPool2d) and _pair(m.padding) != (0, 0):
                raise ValueError(f"op {i}: padded average pooling is not supported")
            d = _pair(getattr(m, "dilation", 1))
            out.append(Op(i, "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool", _pair(m.kernel_size),
                          _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding), d))
        elif isinstance(m, nn.ReLU | nn.LeakyReLU | nn.BatchNorm2d | nn.Dropout | nn.Identity):
            out.append(Op(i, "point"))
        else:
            raise ValueError(f"op {i}: {type(m).__name__} cannot be split spatially")
    return out


def flat_modules(seq: Any) -> list[Any]:
    from torch import nn

    if isinstance(seq, nn.Sequential):
        return [m for c in seq for m in flat_modules(c)]
    return [seq]


def shapes(ops: list[Op], hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Spatial size at every op boundary: ``out[i]`` is the input of op i, ``out[-1]`` the last output."""
    sizes = [hw]
    for op in ops:
        h, w = sizes[-1]
        sizes.append((op.out_size(h, 0), op.out_size(w, 1)))
    return sizes


@dataclass(frozen=True)
class Region:
    """What one device computes: ops ``[start, end)`` for an output rectangle, read from ``inp``."""

    start: int
    end: int
    out: tuple[Range, Range]  # rows, columns of op end-1's output
    inp: tuple[Range, Range]  # rows, columns of op start's input (clipped)
    pads: tuple[tuple[int, int, int, int], ...]  # per op: (left, right, top, bottom), F.pad order

    @property
    def in_elems(self) -> int:
        return (self.inp[0][1] - self.inp[0][0]) * (self.inp[1][1] - self.inp[1][0])

    @property
    def out_elems(self) -> int:
        return (self.out[0][1] - self.out[0][0]) * (self.out[1][1] - self.out[1][0])


def region_from_meta(d: dict[str, Any]) -> Region:
    """A ``Region`` back from its JSON form (lists for tuples)."""
    def rng(v: Any) -> Range:
        return (int(v[0]), int(v[1]))

    pads = tuple((int(p[0]), int(p[1]), int(p[2]), int(p[3])) for p in d["pads"])
    return Region(int(d["start"]), int(d["end"]), (rng(d["out"][0]), rng(d["out"][1])),
                  (rng(d["inp"][0]), rng(d["inp"][1])), pads)


def trace(ops: list[Op], hw: tuple[int, int], start: int, end: int, out: tuple[Range, Range]) -> Region:
    """Walk ``out`` (a rectangle of op end-1's output) back through ops [start, end)."""
    sizes = shapes(ops, hw)
    rows, cols = out
    pads: list[tuple[int, int, int, int]] = []
    for i in range(end - 1, start - 1, -1):
        h, w = sizes[i]
        rows, (pt, pb) = ops[i].needs(rows, h, 0)
        cols, (pl, pr) = ops[i].needs(cols, w, 1)
        pads.append((pl, pr, pt, pb))
    return Region(start, end, out, (rows, cols), tuple(reversed(pads)))


def split_even(n: int, parts: int) -> list[Range]:
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def split_weighted(n: int, weights: list[float]) -> list[Range]:
    """MoDNN's biased one-dimensional partition: rows in proportion to each device's speed."""
    w = np.asarray(weights, dtype=float)
    edges = np.concatenate([[0], np.cumsum(w / w.sum() * n)]).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def grid(ops: list[Op], hw: tuple[int, int], fused: int, n: int, m: int) -> list[Region]:
    """DeepThings' FTP: an n x m grid over op fused-1's output, each tile traced back to the input."""
    h, w = shapes(ops, hw)[fused]
    return [trace(ops, hw, 0, fused, (r, c)) for r in split_even(h, n) for c in split_even(w, m)]


def stages(ops: list[Op]) -> list[tuple[int, int]]:
    """MoDNN's layer-by-layer rounds: each spatial op with the pointwise ops after it (a conv and its
    activation; a pool)."""
    out: list[tuple[int, int]] = []
    for op in ops:
        if op.kind != "point" or not out:
            out.append((op.index, op.index + 1))
        else:
            out[-1] = (out[-1][0], op.index + 1)
    return out


# -- execution -----------------------------------------------------------------------------------------
def run_region(modules: list[Any], ops: list[Op], x: Any, region: Region) -> Any:
    """Run ops [start, end) of ``modules`` on ``x`` (the region's clipped input) with explicit padding."""
    import torch.nn.functional as F
    from torch import nn

    for i in range(region.start, region.end):
        m, op, pad = modules[i], ops[i], region.pads[i - region.start]
        if op.kind == "point":
            x = m(x)
            continue
        if any(pad):
            x = F.pad(x, pad, value=float("-inf") if op.kind == "maxpool" else 0.0)
        if isinstance(m, nn.Conv2d):
            x = F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        elif isinstance(m, nn.MaxPool2d):
            x = F.max_pool2d(x, m.kernel_size, m.stride, 0, m.dilation)
        else:
            x = F.avg_pool2d(x, m.kernel_size, m.stride, 0)
    return x


def crop(x: Any, outer: tuple[Range, Range], inner: tuple[Range, Range]) -> Any:
    """The part of ``x`` (covering ``outer``) that covers ``inner``."""
    (r0, _), (c0, _) = outer
    (a, b), (c, d) = inner
    return x[..., a - r0:b - r0, c - c0:d - c0]
