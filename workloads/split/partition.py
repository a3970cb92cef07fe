"""Cut any traceable torch model into an ordered chain of blocks with torch.fx.

A *valid cut point* is a graph position after which exactly one value is still needed by the rest
of the graph: the output of the node just before it. Inside a residual or inception block the
block's input stays live (the skip connection), so such blocks collapse into one chain block, as
seed 002's preprocessing of DAG-shaped DNNs describes. Consecutive nodes between two cut points
form one block, a ``GraphModule`` sharing the original model's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn


@dataclass(frozen=True)
class BlockInfo:
    """Static facts about one block."""

    index: int
    name: str  # e.g. "features.3..features.5" (first..last op)
    ops: tuple[str, ...]
    out_shape: tuple[int, ...]
    out_bytes: int  # float32 output tensor, batch as in the example input
    param_bytes: int
    flops: int
    kind: str  # dominant layer type, for per-layer-type regression (conv, linear, pool, act, norm, other)


@dataclass
class Chain:
    """A model cut into blocks; ``blocks[i]`` maps block i's input tensor to its output tensor."""

    model_name: str
    blocks: list[fx.GraphModule]
    info: list[BlockInfo]
    input_shape: tuple[int, ...]
    input_bytes: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.blocks)

    def run(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run blocks ``start .. end-1`` on ``x``."""
        for b in self.blocks[start:end]:
            x = b(x)
        return x

    def cut_bytes(self, k: int) -> int:
        """Bytes crossing a cut placed before block ``k`` (k = 0: the raw input; k = n: the output)."""
        return self.input_bytes if k == 0 else self.info[k - 1].out_bytes


def _users_after(order: dict[fx.Node, int], node: fx.Node) -> int:
    return max((order[u] for u in node.users), default=-1)


def _cut_points(graph: fx.Graph) -> list[int]:
    """Positions i such that after node i only node i's value is live (positions index graph.nodes)."""
    nodes = list(graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    last_use = {n: _users_after(order, n) for n in nodes}
    cuts = []
    for i, n in enumerate(nodes):
        if n.op in ("output", "get_attr") or i == 0:
            continue
        if nodes[i + 1].op == "output":
            break
        live = [m for m in nodes[: i + 1] if m.op != "get_attr" and last_use[m] > i]
        if live == [n]:
            cuts.append(i)
    return cuts


_KINDS = {nn.Conv2d: "conv", nn.Linear: "linear", nn.MaxPool2d: "pool", nn.AvgPool2d: "pool",
          nn.AdaptiveAvgPool2d: "pool", nn.ReLU: "act", nn.ReLU6: "act", nn.BatchNorm2d: "norm",
          nn.Dropout: "act"}


def _kind(gm: fx.GraphModule, nodes: list[fx.Node]) -> str:
    kinds = []
    for n in nodes:
        if n.op == "call_module":
            kinds.append(_KINDS.get(type(gm.get_submodule(str(n.target))), "other"))
    for k in ("conv", "linear", "pool", "norm", "act"):
        if k in kinds:
            return k
    return "other"


def partition(model: nn.Module, example: torch.Tensor, model_name: str = "") -> Chain:
    """Trace ``model`` and cut it into a chain of blocks at every valid cut point.

    Raises
    ------
    torch.fx.proxy.TraceError
        If the model is not symbolically traceable (data-dependent control flow).
    """
    from torch.fx.passes.shape_prop import ShapeProp
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    gm = fx.symbolic_trace(model)
    with torch.inference_mode():
        ShapeProp(gm).propagate(example)
    nodes = list(gm.graph.nodes)
    cuts = _cut_points(gm.graph)
    out_node = next(n for n in nodes if n.op == "output")
    final = out_node.args[0]
    assert isinstance(final, fx.Node)
    bounds = [0, *[c + 1 for c in cuts], nodes.index(out_node)]
    blocks: list[fx.GraphModule] = []
    infos: list[BlockInfo] = []
    x = example
    for bi in range(len(bounds) - 1):
        seg = [n for n in nodes[bounds[bi]:bounds[bi + 1]] if n.op != "placeholder"]
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        inp = g.placeholder("x")
        if bi == 0:
            env[nodes[0]] = inp
        else:
            env[nodes[cuts[bi - 1]]] = inp
        lookup = env.__getitem__
        for n in seg:
            for a in n.all_input_nodes:  # attributes used by this block that live outside it
                if a not in env and a.op == "get_attr":
                    env[a] = g.node_copy(a, lookup)
            env[n] = g.node_copy(n, lookup)
        last = seg[-1] if bi < len(bounds) - 2 else final
        g.output(env[last])
        block = fx.GraphModule(gm, g, class_name=f"Block{bi}")
        params: dict[int, torch.Tensor] = {id(p): p for n in seg if n.op == "call_module"
                                           for p in gm.get_submodule(str(n.target)).parameters()}
        params.update({id(t): t for n in seg if n.op == "get_attr"
                       for t in [getattr(gm, str(n.target))] if isinstance(t, torch.Tensor)})
        with torch.inference_mode():
            fc = FlopCounterMode(display=False)
            with fc:
                y = block(x)
        flops = int(fc.get_total_flops())
        if flops == 0:
            flops = int(y.numel())  # element-wise work: one op per output element
        ops = tuple(str(n.target) if n.op == "call_module" else getattr(n.target, "__name__", str(n.target))
                    for n in seg)
        infos.append(BlockInfo(bi, f"{ops[0]}..{ops[-1]}" if len(ops) > 1 else ops[0], ops, tuple(y.shape),
                               int(y.numel() * y.element_size()), int(sum(p.numel() * p.element_size()
                                                                           for p in params.values())),
                               flops, _kind(gm, seg)))
        blocks.append(block)
        x = y
    return Chain(model_name, blocks, infos, tuple(example.shape), int(example.numel() * example.element_size()))
