"""``ComputeActor``: the capped process where a node's models run.

It joins its cgroup first thing (before torch allocates, so memory is charged to the node),
runs one intra-op thread (host-facts: more threads than the quota's cores waste it spinning) and,
under the dilation backend, stretches each call to the class's time by sleeping the remainder.

Times are emulated (``testbed.clock``): the run's time dilation ``k`` is configured first thing, and a call that
lasts ``T`` on the emulated class lasts ``T * k`` on the host. Under ``dilation`` a whole-model call is paced to
the class's figure itself (``target_ms``); a call on blocks of a chain to the figure times the blocks' share of
the chain's CPU time (profiled when the chain is loaded, and again by each ``profile_blocks``); any other call (a
model's own entry point, a model other than the node's) to its thread-CPU time times the plan's ``slowdown``.
The real model runs in every case; the emulated time is late (``late_ms`` > 0) only when the host did not finish
within the stretched time.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import ray


@ray.remote(num_cpus=0)
class ComputeActor:
    def __init__(self, plans: dict[str, dict[str, Any]], cgroup: dict[str, Any] | None, seed: int,
                 time_dilation: float = 1.0) -> None:
        from testbed import clock

        clock.configure(time_dilation)
        if cgroup is not None:
            from testbed.emulation.cgroups import CgroupLeaf

            CgroupLeaf(cgroup["name"], cgroup["mode"], tuple(cgroup["dirs"])).attach(os.getpid())
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(seed)
        self.plans = plans  # node -> ComputePlan dict
        self.models: dict[str, Any] = {}
        self.chains: dict[str, Any] = {}
        self.chain_model: dict[str, str] = {}  # chain key -> model name
        self.model_of: dict[str, str] = {}  # model key -> model name
        self.shares: dict[str, list[float]] = {}  # chain key -> each block's share of the chain's CPU time
        self.cgroup = cgroup

    def pid(self) -> tuple[int, float]:
        import psutil

        return os.getpid(), psutil.Process().create_time()

    def load(self, key: str, model_name: str, seed: int, weights_path: str | None = None) -> str:
        from testbed.workload import MODELS

        if key not in self.models:
            md = MODELS.get(model_name)
            self.models[key] = md.build(md.num_classes, seed, weights_path)
            self.model_of[key] = model_name
        return key

    def unload(self, key: str) -> bool:
        """Drop model (or chain) ``key`` and give its memory back (a Pi-class node cannot hold two VGG-16s)."""
        import gc

        found = self.models.pop(key, None) is not None
        found = self.chains.pop(key, None) is not None or found
        gc.collect()
        return found

    def load_chain(self, key: str, model_name: str, seed: int, weights_path: str | None = None,
                   fresh: bool = False) -> list[dict[str, Any]]:
        """Load a model cut into blocks (torch.fx); returns the blocks' static facts.

        ``fresh`` rebuilds it (with ``seed``'s random weights) even if ``key`` is loaded.
        """
        import dataclasses

        import torch

        from testbed.workload import MODELS
        from workloads.split.partition import partition

        md = MODELS.get(model_name)
        if fresh:
            self.models.pop(key, None)
            self.chains.pop(key, None)
        if key not in self.chains:
            self.load(key, model_name, seed, weights_path)
            self.chains[key] = partition(self.models[key], torch.zeros(1, *md.input_shape), model_name)
            self.chain_model[key] = model_name
            n = len(self.chains[key].blocks)
            self.shares[key] = [1.0 / n] * n
            if any(p["backend"] == "dilation" for p in self.plans.values()):
                self.profile_blocks(key, 3)  # sets the shares
        return [dataclasses.asdict(i) for i in self.chains[key].info]

    def block_state(self, key: str, start: int, end: int) -> tuple[np.ndarray, list[list[Any]]]:
        """The weights and buffers of blocks ``start..end-1`` as one flat float32 array and its layout."""
        flat, spec = [], []
        for i in range(start, end):
            for name, t in self.chains[key].blocks[i].state_dict().items():
                a = t.detach().cpu().numpy()
                spec.append([i, name, list(a.shape), a.dtype.str])
                flat.append(a.astype(np.float32).ravel())
        out = np.concatenate(flat) if flat else np.zeros(0, np.float32)
        return out, spec

    def load_block_state(self, key: str, flat: np.ndarray, spec: list[list[Any]]) -> int:
        """Load weights received from another node into this chain's blocks; returns the bytes loaded."""
        import torch

        off = 0
        per_block: dict[int, dict[str, Any]] = {}
        for i, name, shape, dtype in spec:
            n = int(np.prod(shape)) if shape else 1
            per_block.setdefault(int(i), {})[name] = torch.from_numpy(
                flat[off:off + n].astype(np.dtype(dtype)).reshape(shape))
            off += n
        for i, sd in per_block.items():
            self.chains[key].blocks[i].load_state_dict(sd, strict=True)
        return int(flat.nbytes)

    def profile_blocks(self, key: str, iters: int) -> dict[str, list[float]]:
        """Median thread-CPU and wall ms of each block of chain ``key`` (one thread, this process's caps)."""
        import statistics

        import torch

        chain = self.chains[key]
        cpu: list[list[float]] = [[] for _ in chain.blocks]
        wall: list[list[float]] = [[] for _ in chain.blocks]
        with torch.inference_mode():
            for it in range(iters + 1):
                x = torch.rand(1, *chain.input_shape[1:])
                for i, b in enumerate(chain.blocks):
                    c0, w0 = time.thread_time_ns(), time.perf_counter_ns()  # wall: host time of each block
                    x = b(x)
                    if it:  # the first pass warms up
                        cpu[i].append((time.thread_time_ns() - c0) / 1e6)
                        wall[i].append((time.perf_counter_ns() - w0) / 1e6)  # wall: host time
        med = [statistics.median(c) for c in cpu]
        if key in self.shares and sum(med) > 0:
            # the latest profile is what paced calls on blocks follow: a planner that predicts from this profile
            # and the calls it then makes see the same per-block class times
            self.shares[key] = [c / sum(med) for c in med]
        return {"cpu_ms": med, "wall_ms": [statistics.median(w) for w in wall]}

    def forward(self, node: str, key: str, x: np.ndarray, sent_ns: int, start_block: int = 0,
                end_block: int | None = None, method: str | None = None,
                kwargs: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, int | float]]:
        """Run model ``key`` (or blocks ``start_block..end_block-1`` of chain ``key``, or the model's own
        entry point ``method(x, **kwargs)``, e.g. one tile of a horizontal split) for ``node`` on ``x``.

        Returns the output and timings (ns).
        """
        import torch

        from testbed import clock

        start = clock.now_ns()
        overhead_ms = (start - sent_ns) / 1e6
        c0 = time.thread_time_ns()
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x))
            if t.dtype == torch.uint8:  # camera frames travel as bytes
                t = t.float().div_(255.0)
            if method is not None:
                out = getattr(self.models[key], method)(t, **(kwargs or {})).numpy()
            elif key in self.chains:
                out = self.chains[key].run(t, start_block, end_block).numpy()
            else:
                out = self.models[key](t).numpy()
        cpu = time.thread_time_ns() - c0
        wall = clock.now_ns() - start  # emulated ns the host took
        plan = self.plans[node]
        late = 0.0
        class_ns: float
        if plan["backend"] == "dilation":
            class_ns = self._class_ns(plan, key, cpu, start_block, end_block, method)
            deadline = start + class_ns
            while (rem := deadline - clock.now_ns()) > 0:
                w = clock.wall_ns(rem)
                time.sleep(w / 1e9 if w > 200_000 else 0)  # wall: the remainder, converted; spins its last 0.2 ms
            late = max(0.0, wall - class_ns)
        end = clock.now_ns()
        if plan["backend"] != "dilation":
            class_ns = end - start
        return out, {"sent_ns": sent_ns, "start_ns": start, "end_ns": end, "cpu_ns": cpu, "wall_ns": wall,
                     "class_ns": int(class_ns), "call_overhead_ms": overhead_ms, "late_ms": late / 1e6}

    def _class_ns(self, plan: dict[str, Any], key: str, cpu_ns: int, start_block: int, end_block: int | None,
                  method: str | None) -> float:
        """Emulated ns this call takes on the node's class (see the module docstring)."""
        target = plan.get("target_ms")
        model = plan.get("model")
        if method is None and target is not None and not plan.get("host_speed"):
            if key in self.chains and self.chain_model.get(key) == model:
                shares = self.shares[key]
                return float(target * 1e6 * sum(shares[start_block:end_block]))
            if key not in self.chains and self.model_of.get(key) == model:
                return float(target * 1e6)
        return float(cpu_ns * plan["slowdown"])

    def bench(self, model_name: str, iters: int) -> tuple[list[float], list[float]]:
        """Wall and thread-CPU latencies (ms) of ``model_name`` here, under this process's caps."""
        from testbed.calibration import measure_latency_ms

        cpu: list[float] = []
        wall = measure_latency_ms(model_name, iters=iters, cpu_out=cpu)
        return wall, cpu

    def set_plan(self, node: str, plan: dict[str, Any]) -> None:
        self.plans[node] = plan

    def set_limits(self, cores: float | None, memory_bytes: int | None, period_us: int) -> None:
        from testbed.emulation.cgroups import CgroupLeaf

        assert self.cgroup is not None
        CgroupLeaf(self.cgroup["name"], self.cgroup["mode"], tuple(self.cgroup["dirs"])).set_limits(
            cores, memory_bytes, period_us)
