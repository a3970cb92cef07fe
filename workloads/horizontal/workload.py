"""The ``modnn`` and ``deepthings`` workloads: scaling over devices and link rates, exactness, bytes, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from testbed.config.models import Tier
from testbed.errors import ConfigError
from testbed.topology import Topology
from testbed.workload import MODELS, WORKLOADS, StepResult, Workload
from workloads.horizontal import region_meta, role_params
from workloads.horizontal.tiles import grid

PAPER_MODNN = "MoDNN (VGG-16, LG Nexus 5 phones, WLAN): 2.17x-4.28x speed-up going from 2 to 4 workers"
PAPER_DEEPTHINGS = ("DeepThings (YOLOv2, Raspberry Pi 3B devices + Pi 3B gateway, WLAN): memory footprint -68 %, "
                    "throughput 1.7x-2.2x, inference speed-up 1.7x-3.5x")


class HorizontalParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = "vgg16"
    devices: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4, 6], min_length=1)
    link_mbit: list[PositiveFloat] | None = None  # sweep every link's rate (both directions); None: as in the topology
    frames: PositiveInt = 2
    # MoDNN's owner (default: the first device) / DeepThings' gateway (default: the first edge node)
    coordinator: str | None = None
    tolerance: PositiveFloat = 1e-4

    @field_validator("model")
    @classmethod
    def _splittable(cls, v: str) -> str:
        from workloads.horizontal.net import SPLITTABLE

        if v not in SPLITTABLE:
            raise ValueError(f"model {v!r} cannot be split horizontally; use one of {', '.join(SPLITTABLE)}")
        return v


class ModnnParams(HorizontalParams):
    partition: str = Field("biased", pattern="^(biased|even)$")  # rows by measured speed, or equal


class DeepThingsParams(HorizontalParams):
    model: str = "yolov2_tiny"
    fused: PositiveInt = 16  # the first ops fused into tiles (DeepThings fuses YOLOv2's first 16 layers)
    grids: list[list[PositiveInt]] = Field(default_factory=lambda: [[3, 3]], min_length=1)
    measure_memory: bool = True


class _Horizontal(Workload):
    kind = ""

    @property
    def hp(self) -> HorizontalParams:
        assert isinstance(self.params, HorizontalParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        assert isinstance(params, HorizontalParams)
        coord, devs = cls._roles(topology, params)
        need = max(params.devices)
        if need > len(devs):
            raise ConfigError(f"{cls.kind} needs {need} devices, the topology has {len(devs)} besides {coord}",
                              file=source, path="workload.params.devices",
                              fix=f"add device nodes or lower devices to at most {len(devs)}")

    @classmethod
    def _roles(cls, topo: Topology, p: HorizontalParams) -> tuple[str, list[str]]:
        edges = topo.by_tier(Tier.EDGE)
        devices = topo.by_tier(Tier.DEVICE)
        coord = p.coordinator or (edges[0] if edges and cls.kind == "deepthings" else devices[0])
        workers = [d for d in devices if d != coord]
        return coord, ([coord] + workers if cls.kind == "modnn" else workers)

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        coord, devs = self._roles(topology, self.hp)
        return {n: self.hp.model for n in {coord, *devs}}

    def setup(self, tb: Any) -> None:
        self.coord, self.devs = self._roles(tb.topology, self.hp)
        self.hkey = "h"
        self.params_ = role_params(self.hkey, self.hp.model)
        used = list(dict.fromkeys([self.coord, *self.devs]))
        for n in used:
            tb.unload_model(n, self.hp.model)  # the copy the cap fit loaded: a 1 GB Pi cannot hold two VGG-16s
            tb.load_model(n, self.hkey, f"h_{self.hp.model}")
            tb.add_role(n, "hsplit", self.params_)
        md = MODELS.get(self.hp.model)
        rng = np.random.default_rng(self.seed)
        self.x = rng.integers(0, 256, size=(self.hp.frames, *md.input_shape), dtype=np.uint8)
        self.speed_ms = {n: float(np.median(tb.probe(n, self.hkey, f"h_{self.hp.model}", 3)[0])) for n in used}
        self.rates = list(self.hp.link_mbit) if self.hp.link_mbit else [None]
        self.rows: list[dict[str, Any]] = []
        self.mem_rows: list[dict[str, Any]] = []
        self.todo = self._plan()

    def _plan(self) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def total_steps(self) -> int:
        return len(self.todo)

    def _set_rates(self, tb: Any, mbit: float | None) -> None:
        if mbit is None:
            return
        for link in tb.topology.links:
            if link.up.rate_mbit != mbit or link.down.rate_mbit != mbit:
                tb.set_link(link.index, link.up.model_copy(update={"rate_mbit": mbit}),
                            link.down.model_copy(update={"rate_mbit": mbit}))

    def _reference(self, tb: Any) -> tuple[list[np.ndarray], float]:
        """Unsplit outputs and latency on one device (the first worker)."""
        node = self.devs[0]
        outs, lat = [], []
        for f in range(len(self.x)):
            r = tb.call(node, "hsplit", "whole", timeout=3600, x=self.x[f:f + 1], rid=-1)
            outs.append(r["output"])
            lat.append(r["latency_ms"])
        return outs, float(np.median(lat))

    def artifacts(self) -> dict[str, pd.DataFrame]:
        return {f"{self.kind}_runs": pd.DataFrame(self.rows), "memory": pd.DataFrame(self.mem_rows),
                "device_speed": pd.DataFrame([{"node": n, "whole_model_ms": v} for n, v in self.speed_ms.items()])}

    def _traffic(self, spans: pd.DataFrame) -> pd.DataFrame:
        """Per phase: bytes moved, and compute vs transfer time summed over nodes."""
        if spans.empty:
            return pd.DataFrame()
        g = spans.groupby("phase")
        tr = spans[spans.kind == "transfer"].groupby("phase")
        cp = spans[spans.kind == "compute"].groupby("phase")
        return pd.DataFrame({"bytes": tr["bytes"].sum(), "transfer_ms_sum": tr.duration_ms.sum(),
                             "compute_ms_sum": cp.duration_ms.sum()}).reindex(g.size().index).fillna(0)

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        t = self._traffic(spans)
        if not t.empty:
            df = df.join(t, on="phase")
            n = df["frames"].clip(lower=1)
            df["bytes_per_frame"] = df["bytes"] / n
            df["compute_ms_per_frame"] = df["compute_ms_sum"] / n
            df["transfer_ms_per_frame"] = df["transfer_ms_sum"] / n
            df = df.drop(columns=["bytes", "compute_ms_sum", "transfer_ms_sum"])
        keys = ["link_mbit"] + (["grid"] if "grid" in df else [])
        one = df[df.devices == 1][keys + ["latency_ms"]].rename(columns={"latency_ms": "one_device_split_ms"})
        df = df.merge(one, on=keys, how="left")
        df["speedup_vs_1"] = df.one_device_split_ms / df.latency_ms  # the papers' scaling: same method, 1 device
        df["speedup_vs_unsplit"] = df.single_device_ms / df.latency_ms
        return df


def _scaling_findings(summary: pd.DataFrame, paper: str) -> pd.DataFrame:
    rows = [{"finding": "every distributed output equals the unsplit model's (max abs diff <= tolerance)",
             "result": "held" if bool(summary.exact.all()) else "did not hold",
             "held_in": f"{int(summary.exact.sum())}/{len(summary)}",
             "evidence": f"max abs diff {summary.max_abs_diff.max():.2e}"}]
    keys = ["link_mbit"] + (["grid"] if "grid" in summary else [])
    for key, g in summary.groupby(keys):
        top = g[g.devices == g.devices.max()].iloc[0]
        if top.devices > 1:
            where = ", ".join(f"{k} {v}" for k, v in zip(keys, np.atleast_1d(key).tolist(), strict=True))
            rows.append({"finding": f"more devices are faster than one ({where}; paper: {paper})",
                         "result": "held" if top.speedup_vs_1 > 1 else "did not hold", "held_in": "",
                         "evidence": f"{int(top.devices)} devices: {top.speedup_vs_1:.2f}x over 1, "
                                     f"{top.speedup_vs_unsplit:.2f}x over the unsplit model"})
    return pd.DataFrame(rows)


@WORKLOADS.register("modnn")
class Modnn(_Horizontal):
    Params = ModnnParams
    kind = "modnn"

    @property
    def p(self) -> ModnnParams:
        assert isinstance(self.params, ModnnParams)
        return self.params

    def _plan(self) -> list[tuple[Any, ...]]:
        return [(r, k) for r in self.rates for k in self.p.devices]

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        return _scaling_findings(summary, "2.17-4.28x from 2 to 4 workers")

    def step(self, tb: Any) -> StepResult:
        rate, k = self.todo.pop(0)
        if not hasattr(self, "ref"):
            self.ref, self.ref_ms = self._reference(tb)
        self._set_rates(tb, rate)
        workers = self.devs[:k]
        weights = [1 / self.speed_ms[w] for w in workers] if self.p.partition == "biased" else [1.0] * k
        label = f"modnn {k} workers @ {rate or 'topology'} Mbit/s"
        tb.set_phase(label)
        lat, diff = [], 0.0
        for f in range(len(self.x)):
            r = tb.call(self.coord, "hsplit", "modnn", timeout=3600, x=self.x[f:f + 1], workers=workers,
                        weights=weights, fc_sizes=self.params_["fc_sizes"], rid=f, label=label)
            lat.append(r["latency_ms"])
            diff = max(diff, float(np.abs(r["output"] - self.ref[f]).max()))
        self.rows.append({"phase": label, "devices": k, "link_mbit": rate or 0.0, "frames": len(self.x),
                          "latency_ms": float(np.median(lat)), "single_device_ms": self.ref_ms,
                          "max_abs_diff": diff, "exact": diff <= self.p.tolerance,
                          "workers": ",".join(workers),
                          "row_shares": ",".join(f"{w / sum(weights):.2f}" for w in weights),
                          "paper": PAPER_MODNN})
        return StepResult(progress=1, done=not self.todo, info={"label": label})


@WORKLOADS.register("deepthings")
class DeepThings(_Horizontal):
    Params = DeepThingsParams
    kind = "deepthings"

    @property
    def p(self) -> DeepThingsParams:
        assert isinstance(self.params, DeepThingsParams)
        return self.params

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:
        super().check(params, topology, source)
        from workloads.horizontal.net import wrap

        assert isinstance(params, DeepThingsParams)
        md = MODELS.get(params.model)
        n_ops = len(wrap(md.build(md.num_classes, 0)).ops)
        if params.fused > n_ops:
            raise ConfigError(f"fused = {params.fused} but {params.model} has {n_ops} spatial ops", file=source,
                              path="workload.params.fused", fix=f"use 1..{n_ops}")

    def _plan(self) -> list[tuple[Any, ...]]:
        return [(r, k, tuple(g)) for r in self.rates for g in self.p.grids for k in self.p.devices]

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        return _scaling_findings(summary, "1.7-3.5x faster inference")

    def step(self, tb: Any) -> StepResult:
        rate, k, g = self.todo.pop(0)
        if not hasattr(self, "ref"):
            self.ref, self.ref_ms = self._reference(tb)
            if self.p.measure_memory:
                self._memory()
        self._set_rates(tb, rate)
        devs = self.devs[:k]
        label = f"ftp {g[0]}x{g[1]} on {k} devices @ {rate or 'topology'} Mbit/s"
        tb.set_phase(label)
        one = tb.call(self.coord, "hsplit", "ftp", timeout=3600, frames=self.x[:1], devices=devs, fused=self.p.fused,
                      grid_nm=list(g), rid0=0, label=label)
        stream = tb.call(self.coord, "hsplit", "ftp", timeout=3600, frames=self.x, devices=devs, fused=self.p.fused,
                         grid_nm=list(g), rid0=1000, label=label)
        diff = max(float(np.abs(stream["outputs"][f:f + 1] - self.ref[f]).max()) for f in range(len(self.x)))
        diff = max(diff, float(np.abs(one["outputs"] - self.ref[0]).max()))
        self.rows.append({"phase": label, "devices": k, "grid": f"{g[0]}x{g[1]}", "link_mbit": rate or 0.0,
                          "frames": len(self.x) + 1, "latency_ms": one["frame_ms"][0],
                          "throughput_fps": len(self.x) / (max(stream["frame_ms"]) / 1e3),
                          "single_device_ms": self.ref_ms, "single_device_fps": 1e3 / self.ref_ms,
                          "max_abs_diff": diff, "exact": diff <= self.p.tolerance,
                          "tiles_per_device": json.dumps(stream["tiles_per_device"]), "paper": PAPER_DEEPTHINGS})
        return StepResult(progress=1, done=not self.todo, info={"label": label})

    def _memory(self) -> None:
        """Peak resident memory of a device process: the whole model on a whole frame vs the fused ops on the
        largest tile of each grid (each in a fresh process, on this host)."""
        import torch

        from workloads.horizontal.net import wrap

        md = MODELS.get(self.p.model)
        net = wrap(md.build(md.num_classes, self.seed))
        hw = tuple(md.input_shape[1:])
        with tempfile.TemporaryDirectory() as d:
            whole, fused = Path(d) / "whole.pt", Path(d) / "fused.pt"
            torch.save(net.base, whole)
            torch.save(torch.nn.ModuleList(list(net.feats)[:self.p.fused]), fused)
            w = _probe(whole, [1, *md.input_shape])
            self.mem_rows.append({"what": "whole model, whole frame", "grid": "", **w})
            for g in self.p.grids:
                tiles = grid(net.ops, hw, self.p.fused, g[0], g[1])  # type: ignore[arg-type]
                big = max(tiles, key=lambda t: t.in_elems)
                shape = [1, md.input_shape[0], big.inp[0][1] - big.inp[0][0], big.inp[1][1] - big.inp[1][0]]
                t = _probe(fused, shape, region_meta(big))
                red = 100 * (1 - t["peak_bytes"] / w["peak_bytes"]) if w["peak_bytes"] else None
                self.mem_rows.append({"what": f"fused ops 0..{self.p.fused}, largest tile", "grid": f"{g[0]}x{g[1]}",
                                      **t, "reduction_pct": red})


def _probe(path: Path, shape: list[int], region: dict[str, Any] | None = None) -> dict[str, int]:
    cmd = [sys.executable, "-m", "workloads.horizontal.memprobe", str(path), json.dumps(shape)]
    if region is not None:
        cmd.append(json.dumps(region))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)  # wall: a host memory probe
    res: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return res
