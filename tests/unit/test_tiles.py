"""Horizontal splits: receptive-field arithmetic on known layers, and tiles/bands equal to the unsplit model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from workloads.horizontal.net import wrap
from workloads.horizontal.tiles import Op, grid, ops_of, run_region, shapes, split_weighted, stages, trace


def test_receptive_fields_of_single_layers() -> None:
    conv = Op(0, "conv", (3, 3), (1, 1), (1, 1))
    assert conv.needs((2, 5), 10, 0) == ((1, 6), (0, 0))
    assert conv.needs((0, 3), 10, 0) == ((0, 4), (1, 0))  # the top band needs one zero row of padding
    assert conv.needs((8, 10), 10, 0) == ((7, 10), (0, 1))
    strided = Op(0, "conv", (3, 3), (2, 2), (1, 1))
    assert strided.out_size(10, 0) == 5 and strided.needs((1, 3), 10, 0) == ((1, 6), (0, 0))
    pool = Op(0, "maxpool", (2, 2), (2, 2))
    assert pool.needs((1, 3), 8, 0) == ((2, 6), (0, 0))
    assert Op(0, "point").needs((3, 4), 9, 1) == ((3, 4), (0, 0))


def test_trace_through_a_fused_stack() -> None:
    ops = ops_of(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(1, 1, 3, padding=1)))
    assert shapes(ops, (16, 16))[-1] == (8, 8)
    r = trace(ops, (16, 16), 0, 4, ((0, 2), (3, 5)))
    # conv: rows [0,3) pad top 1; pool: [0,6); relu: same; conv: [0,7) pad top 1. Columns: [2,6) -> [4,12) -> [3,13)
    assert r.inp == ((0, 7), (3, 13))
    assert r.pads == ((0, 0, 1, 0), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 1, 0))
    assert stages(ops) == [(0, 2), (2, 3), (3, 4)]
    with pytest.raises(ValueError, match="cannot be split"):
        ops_of(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)))


def test_biased_partition_follows_speed() -> None:
    assert split_weighted(100, [1, 1]) == [(0, 50), (50, 100)]
    assert split_weighted(100, [3, 1]) == [(0, 75), (75, 100)]
    assert sum(b - a for a, b in split_weighted(37, [0.3, 0.5, 0.2])) == 37


@pytest.mark.parametrize("name, fused, n, m", [("small_cnn", 8, 2, 3), ("small_cnn", 11, 4, 4),
                                              ("yolov2_tiny", 16, 3, 3), ("yolov2_tiny", 24, 5, 2)])
def test_fused_tiles_equal_the_unsplit_model(name: str, fused: int, n: int, m: int) -> None:
    from testbed.workload import MODELS

    md = MODELS.get(name)
    net = wrap(md.build(md.num_classes, 0)).eval()
    x = torch.rand(1, *md.input_shape)
    hw = tuple(md.input_shape[1:])
    with torch.inference_mode():
        ref = net(x)
        full = x
        for mod in list(net.feats)[:fused]:
            full = mod(full)
        out = torch.zeros_like(full)
        for r in grid(net.ops, hw, fused, n, m):  # type: ignore[arg-type]
            part = x[..., r.inp[0][0]:r.inp[0][1], r.inp[1][0]:r.inp[1][1]]
            out[..., r.out[0][0]:r.out[0][1], r.out[1][0]:r.out[1][1]] = run_region(list(net.feats), net.ops, part, r)
        assert (out - full).abs().max().item() <= 1e-5
        assert (net.tail(out, fused) - ref).abs().max().item() <= 1e-4


def test_modnn_bands_and_fc_slices_equal_the_unsplit_model() -> None:
    from testbed.workload import MODELS

    md = MODELS.get("small_cnn")
    net = wrap(md.build(md.num_classes, 0)).eval()
    x = torch.rand(1, *md.input_shape)
    hw = tuple(md.input_shape[1:])
    sizes = shapes(net.ops, hw)  # type: ignore[arg-type]
    weights = [0.5, 0.3, 0.2]
    with torch.inference_mode():
        h = x
        for s, e in stages(net.ops):
            rows, cols = sizes[e]
            parts = []
            for band in split_weighted(rows, weights):
                if band[1] > band[0]:
                    r = trace(net.ops, hw, s, e, (band, (0, cols)))  # type: ignore[arg-type]
                    parts.append(run_region(list(net.feats), net.ops,
                                            h[..., r.inp[0][0]:r.inp[0][1], r.inp[1][0]:r.inp[1][1]], r))
            h = torch.cat(parts, dim=2)
        h = net.head_pre(h)
        n_out = net.head[net.linears[0]].out_features
        h = torch.cat([net.fc(h, 0, a, b) for a, b in split_weighted(n_out, weights)], dim=1)
        h = net.point(h, 0)
        assert float((h - net(x)).abs().max()) <= 1e-5
    assert np.isfinite(h.numpy()).all()
