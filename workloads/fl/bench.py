"""``testbed bench fl-flower``: wall time per FedAvg round here and in Flower's simulation engine."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

FLOWER_VENV = ".venv-flower"


def bench_fl_flower(clients: int = 10, rounds: int = 6, flower_python: str | None = None) -> list[Any]:
    """The same FedAvg task (model, digits split, clients, local epochs, rounds) in this testbed with unshaped
    links and no caps, and in Flower's simulation engine; wall time per round, side by side in one run.

    Flower lives in its own virtual environment (``scripts/setup-flower-venv.sh``): its simulation extra
    pins a Ray release other than the testbed's.
    """
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    import pandas as pd

    from testbed.bench import Row
    from testbed.config.loader import load_experiment
    from testbed.errors import ConfigError
    from testbed.runner import run_experiment

    py = Path(flower_python or Path(FLOWER_VENV) / "bin" / "python").absolute()
    if not py.exists():
        raise ConfigError(f"no Flower interpreter at {py}", file="testbed bench fl-flower", path="--flower-python",
                          fix="run scripts/setup-flower-venv.sh (a separate venv with flwr[simulation]) first")
    lr, epochs, batch, seed = 0.05, 1, 10, 1
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "t.yaml").write_text(f"""
name: flbench
nodes:
  - {{name: c, tier: device, hardware_class: rpi4b, count: {clients}}}
  - {{name: cloud, tier: cloud, hardware_class: cloud_gpu}}
links:
  - {{ends: [c, cloud], up: {{rate: 10000mbit}}}}
""")
        (root / "e.yaml").write_text(f"""
name: flbench
topology: t.yaml
backends: {{links: userspace, compute: none}}
workload:
  name: federated
  params: {{rounds: {rounds}, variants: [{{algorithm: fedavg, hierarchical: false, lr: {lr}, local_epochs: {epochs},
            batch: {batch}}}]}}
seed: {seed}
""")
        out = run_experiment(load_experiment(root / "e.yaml"), root / "results")
        ours = pd.read_parquet(out.path / "fl_rounds.parquet")
        ours_round = float(ours.round_s.iloc[1:].median())
        # the same split and initial weights for Flower
        from workloads.early_exit.model import load_dataset
        from workloads.fl.algo import split
        from workloads.fl.net import build, flat

        data = load_dataset("digits", None, seed)
        parts = split(data.y_train, clients, "iid", np.random.default_rng(seed))
        w0 = flat(build("fl_mlp")(10, seed).net)
        arrays: dict[str, Any] = {"x": data.x_train, "y": data.y_train, "w0": w0, "n_clients": clients,
                                  "rounds": rounds, "lr": lr, "epochs": epochs, "batch": batch}
        arrays.update({f"idx_{i}": p for i, p in enumerate(parts)})
        np.savez(root / "task.npz", **arrays)
        script = Path(__file__).resolve().parents[2] / "benchmarks" / "flower_fedavg.py"
        res = subprocess.run([str(py), str(script), str(root / "task.npz")], capture_output=True, text=True,
                             timeout=1800, env={**os.environ, "RAY_DEDUP_LOGS": "0"}, cwd=d, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"the Flower run failed:\n{res.stderr[-3000:]}")
        fl = json.loads(res.stdout.strip().splitlines()[-1])
        ends = [fl["start"], *fl["round_ends"]]
        flower_round = float(np.median(np.diff(ends)[1:])) if len(ends) > 2 else float("nan")
    ratio = ours_round / flower_round
    return [Row("fl-flower", f"testbed round, {clients} clients (s)", ours_round, flower_round, "s",
                ratio - 1.0, float("inf"), "x - 1 (testbed/Flower)"),
            Row("fl-flower", "Flower round (s)", flower_round, flower_round, "s", 0.0, float("inf"), ""),
            Row("fl-flower", "testbed / Flower wall time per round", ratio, 1.0, "x", ratio - 1.0, float("inf"), "")]
