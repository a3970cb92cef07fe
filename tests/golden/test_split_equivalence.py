"""Every split of every model, executed across device, edge and cloud actors, equals the unsplit model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import torch

from testbed.config.loader import load_topology
from testbed.testbed import Testbed
from testbed.workload import MODELS

MODELS_UNDER_TEST = ["small_cnn", "alexnet", "resnet18", "mobilenet_v2", "vgg16"]

TOPO = """
name: eq
nodes:
  - {name: dev, tier: device, hardware_class: edge_server}
  - {name: edge, tier: edge, hardware_class: edge_server}
  - {name: cloud, tier: cloud, hardware_class: edge_server}
links:
  - {ends: [dev, edge], up: {rate: 1gbit}}
  - {ends: [edge, cloud], up: {rate: 1gbit}}
"""


def test_partition_in_process_is_exact() -> None:
    from workloads.split.partition import partition

    for name in MODELS_UNDER_TEST:
        md = MODELS.get(name)
        model = md.build(md.num_classes, 0, None)
        x = torch.rand(1, *md.input_shape)
        chain = partition(model, x, name)
        assert len(chain) >= 3
        with torch.inference_mode():
            ref = model(x)
            for k in range(len(chain) + 1):
                mid = chain.run(x, 0, k)
                assert torch.allclose(chain.run(mid, k), ref, atol=1e-5, rtol=0), (name, k)
        assert chain.info[-1].out_shape == tuple(ref.shape)
        assert all(i.flops > 0 and i.out_bytes > 0 for i in chain.info)
        assert sum(i.param_bytes for i in chain.info) == sum(p.numel() * 4 for p in model.parameters())


def test_split_on_the_testbed_equals_unsplit(tmp_path: Path, ray_local: None) -> None:
    """One testbed for every model (a chain per model on each node): starting the actors once, not per model,
    saves a tenth of this suite's time."""
    (tmp_path / "t.yaml").write_text(TOPO)
    topo = load_topology(tmp_path / "t.yaml")
    with Testbed(topo, "e9e9e9e9", 0, "userspace", "none", {"dev": None, "edge": None, "cloud": None}) as tb:
        # Ray's default worker niceness (15) leaves a node ~3 % of a core beside any competitor (testbed/control.py)
        assert {psutil.Process(p).nice() for g in tb.groups.values() for p in g.pids if p} == {0}
        for name in MODELS_UNDER_TEST:
            md = MODELS.get(name)
            for n in topo.nodes:  # the role is replaced; each model's chain is its own key
                tb.add_role(n, "split", {"key": name, "input_shape": list(md.input_shape), "compression": "none"})
            infos = tb.load_chains(list(topo.nodes), name, name)
            nb = len(infos["dev"])
            assert all(len(i) == nb for i in infos.values()), name
            model = md.build(md.num_classes, 0, None)
            rng = np.random.default_rng(0)
            x = rng.integers(0, 256, size=(1, *md.input_shape), dtype=np.uint8)
            with torch.inference_mode():
                ref = model(torch.from_numpy(x).float().div_(255.0)).numpy()
            k1, k2 = nb // 3, 2 * nb // 3
            for c1, c2 in [(0, 0), (0, nb), (nb, nb), (k1, k1), (k1, nb), (k1, k2), (1, nb - 1)]:
                hops = [["dev", 0, c1]] + ([["edge", c1, c2]] if c2 > c1 else []) + (
                    [["cloud", c2, nb]] if c2 < nb else [])
                out = tb.call("dev", "split", "infer_once", hops=hops, x=x)
                assert out.shape == ref.shape, name
                assert float(np.abs(out - ref).max()) <= 1e-5, (name, c1, c2)
            for n in topo.nodes:  # free the model before the next (VGG-16 is half a gigabyte per node)
                assert tb.unload_model(n, name), (n, name)
