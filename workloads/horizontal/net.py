"""``SplitNet``: a model wrapped with the entry points a horizontal split calls on a device.

* ``region(x, **region)``: ops [start, end) of the feature extractor on one band or tile;
* ``tail(x, start)``: the ops from ``start`` on and the head, unsplit (DeepThings' gateway);
* ``head_pre(x)``: what comes before the first Linear layer (pooling, flatten);
* ``fc(x, layer, lo, hi)``: output neurons ``[lo, hi)`` of Linear layer ``layer`` (MoDNN);
* ``point(x, after)``: the pointwise ops after Linear layer ``after`` (activation, dropout).

Registered as ``h_<model>`` for the models the splits support, with the same weights as ``<model>``
for the same seed, so the unsplit output is the reference.
"""

from __future__ import annotations

from typing import Any

import workloads.models  # noqa: F401  (the base models must be registered before they are wrapped)
from testbed.workload import MODELS, ModelDef
from workloads.horizontal.tiles import flat_modules, ops_of, region_from_meta, run_region

SPLITTABLE = ("vgg16", "yolov2_tiny", "small_cnn")


def _parts(base: Any) -> tuple[list[Any], list[Any]]:
    """(feature modules, head modules) of a model: VGG's ``features`` / ``avgpool`` + ``classifier``,
    or a Sequential cut before its first op that cannot be split spatially."""
    from torch import nn

    if hasattr(base, "features") and hasattr(base, "classifier"):
        head = [base.avgpool, nn.Flatten()] + flat_modules(base.classifier)
        return flat_modules(base.features), head
    mods = flat_modules(base)
    n = 0
    for m in mods:
        try:
            ops_of(m)
        except ValueError:
            break
        n += 1
    return mods[:n], mods[n:]


def _wrapper() -> Any:
    import torch
    from torch import nn

    class SplitNet(nn.Module):
        def __init__(self, base: nn.Module) -> None:
            super().__init__()
            self.base = base
            feats, head = _parts(base)
            self.feats = nn.ModuleList(feats)
            self.head = nn.ModuleList(head)
            self.ops = ops_of(nn.Sequential(*feats))
            self.linears = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.base(x)
            return out

        def region(self, x: torch.Tensor, start: int, end: int, out: Any, inp: Any, pads: Any) -> torch.Tensor:
            r = region_from_meta({"start": start, "end": end, "out": out, "inp": inp, "pads": pads})
            y: torch.Tensor = run_region(list(self.feats), self.ops, x, r)
            return y

        def tail(self, x: torch.Tensor, start: int) -> torch.Tensor:
            for m in list(self.feats)[start:]:
                x = m(x)
            for m in self.head:
                x = m(x)
            return x

        def head_pre(self, x: torch.Tensor) -> torch.Tensor:
            for m in list(self.head)[:self.linears[0] if self.linears else len(self.head)]:
                x = m(x)
            return x

        def fc(self, x: torch.Tensor, layer: int, lo: int, hi: int) -> torch.Tensor:
            lin: Any = self.head[self.linears[layer]]
            b = lin.bias[lo:hi] if lin.bias is not None else None
            y: torch.Tensor = torch.nn.functional.linear(x, lin.weight[lo:hi], b)
            return y

        def point(self, x: torch.Tensor, after: int) -> torch.Tensor:
            stop = self.linears[after + 1] if after + 1 < len(self.linears) else len(self.head)
            for m in list(self.head)[self.linears[after] + 1:stop]:
                x = m(x)
            return x

    return SplitNet


def wrap(base: Any) -> Any:
    return _wrapper()(base)


def _builder(name: str) -> Any:
    def build(num_classes: int, seed: int, weights_path: str | None = None) -> Any:
        md = MODELS.get(name)
        return wrap(md.build(num_classes, seed, weights_path)).eval()

    return build


for _name in SPLITTABLE:
    _md = MODELS.get(_name)
    MODELS.register(f"h_{_name}")(ModelDef(f"h_{_name}", _md.input_shape, _md.num_classes, _builder(_name)))
