"""Horizontal splits on the testbed: MoDNN (layer-by-layer row bands and split FC layers) and DeepThings
(Fused Tile Partitioning with work stealing).

MoDNN: the group owner holds the input; for every round (a spatial op and the pointwise ops after it)
it cuts the round's output into row bands in proportion to the workers' measured speeds (the biased
one-dimensional partition), sends each worker the input rows its band needs (with the halo), computes
its own band, and gathers. Fully connected layers are split by output neurons. The owner is worker 0.

DeepThings: the gateway cuts the output of the first ``fused`` ops into an N x M grid; each tile's
receptive field is traced back to the input, and the tiles of every frame go into one queue at the
gateway. Each device takes the next tile whenever it is idle (the shared-queue form of work stealing:
a fast device ends up with more tiles), runs the fused ops on it end to end and returns its output
tile; the gateway stitches a frame once its tiles are back and runs the rest of the network.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np

from testbed import clock
from testbed.transport import Message
from testbed.workload import MODELS, ROLES
from workloads.horizontal.tiles import Op, Region, grid, shapes, split_weighted, stages, trace


def region_meta(r: Region) -> dict[str, Any]:
    return {k: v for k, v in asdict(r).items()}


@ROLES.register("hsplit")
class HSplitRole:
    """Devices: compute a region or a slice of a Linear layer. Owner/gateway: run MoDNN or FTP."""

    def __init__(self, rt: Any, params: dict[str, Any]) -> None:
        self.key = params["key"]
        self.ops = [Op(**o) for o in params["ops"]] if params.get("ops") else []
        hw = params.get("hw", (0, 0))
        self.hw: tuple[int, int] = (int(hw[0]), int(hw[1]))

    def on_message(self, rt: Any, msg: Message) -> tuple[str, np.ndarray, dict[str, Any]]:
        assert msg.array is not None
        rid = int(msg.meta.get("request_id", -1))
        if msg.kind == "region":
            out = rt.compute(self.key, msg.array, rid, method="region", kwargs=msg.meta["region"])
        elif msg.kind == "fc":
            out = rt.compute(self.key, msg.array, rid, method="fc", kwargs=msg.meta["fc"])
        else:
            raise RuntimeError(f"hsplit: unexpected message {msg.kind!r}")
        return "result", out, {}

    def _region(self, rt: Any, node: str, x: np.ndarray, r: Region, rid: int) -> np.ndarray:
        (a, b), (c, d) = r.inp
        part = np.ascontiguousarray(x[..., a:b, c:d])
        if node == rt.name:
            return np.asarray(rt.compute(self.key, part, rid, method="region", kwargs=region_meta(r)))
        reply = rt.request(node, "region", part, {"role": "hsplit", "region": region_meta(r)}, rid)
        assert reply.array is not None
        out: np.ndarray = reply.array
        return out

    def _fc(self, rt: Any, node: str, x: np.ndarray, layer: int, lo: int, hi: int, rid: int) -> np.ndarray:
        kw = {"layer": layer, "lo": lo, "hi": hi}
        if node == rt.name:
            return np.asarray(rt.compute(self.key, x, rid, method="fc", kwargs=kw))
        reply = rt.request(node, "fc", x, {"role": "hsplit", "fc": kw}, rid)
        assert reply.array is not None
        out: np.ndarray = reply.array
        return out

    # -- MoDNN ------------------------------------------------------------------------------------------
    def modnn(self, rt: Any, x: np.ndarray, workers: list[str], weights: list[float], fc_sizes: list[int],
              rid: int, label: str) -> dict[str, Any]:
        """One inference, layer by layer over ``workers`` (``workers[0]`` is this node, the owner)."""
        t0 = clock.now_ns()
        h = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
        sizes = shapes(self.ops, self.hw)
        with ThreadPoolExecutor(len(workers)) as pool:
            for s, e in stages(self.ops):
                rows_out, cols_out = sizes[e]
                bands = [(w, r) for w, r in zip(workers, split_weighted(rows_out, weights), strict=True)
                         if r[1] > r[0]]
                regs = [(w, trace(self.ops, self.hw, s, e, (r, (0, cols_out)))) for w, r in bands]
                outs = list(pool.map(lambda wr, x=h: self._region(rt, wr[0], x, wr[1], rid), regs))
                h = np.concatenate(outs, axis=2)
            if fc_sizes:
                h = np.asarray(rt.compute(self.key, h, rid, method="head_pre", kwargs={}))
                for layer, n_out in enumerate(fc_sizes):
                    parts = [(w, r) for w, r in zip(workers, split_weighted(n_out, weights), strict=True)
                             if r[1] > r[0]]
                    outs = list(pool.map(
                        lambda wr, x=h, layer=layer: self._fc(rt, wr[0], x, layer, wr[1][0], wr[1][1], rid), parts))
                    h = np.concatenate(outs, axis=1)
                    h = np.asarray(rt.compute(self.key, h, rid, method="point", kwargs={"after": layer}))
        t1 = clock.now_ns()
        rt.span("request", t0, t1, request_id=rid, workers=len(workers), config=label)
        return {"latency_ms": (t1 - t0) / 1e6, "output": h}

    # -- DeepThings ---------------------------------------------------------------------------------------
    def ftp(self, rt: Any, frames: np.ndarray, devices: list[str], fused: int, grid_nm: list[int], rid0: int,
            label: str) -> dict[str, Any]:
        """FTP over ``devices`` for a stream of frames (all queued at once); the gateway runs the rest."""
        n, m = grid_nm
        tiles = grid(self.ops, self.hw, fused, n, m)
        rows, cols = shapes(self.ops, self.hw)[fused]
        work: queue.Queue[tuple[int, int]] = queue.Queue()
        for f in range(len(frames)):
            for t in range(len(tiles)):
                work.put((f, t))
        xs = [fr.astype(np.float32)[None] / 255.0 for fr in frames]
        outs: list[np.ndarray | None] = [None] * len(frames)
        left = [len(tiles)] * len(frames)
        taken: dict[str, int] = {d: 0 for d in devices}
        lock = threading.Lock()
        ready: queue.Queue[int] = queue.Queue()
        t0 = clock.now_ns()
        errors: list[BaseException] = []

        def device_loop(dev: str) -> None:
            try:
                while True:
                    try:
                        f, t = work.get_nowait()
                    except queue.Empty:
                        return
                    r = tiles[t]
                    y = self._region(rt, dev, xs[f], r, rid0 + f)
                    with lock:
                        taken[dev] += 1
                        if outs[f] is None:
                            outs[f] = np.zeros((1, y.shape[1], rows, cols), np.float32)
                        (a, b), (c, d) = r.out
                        outs[f][..., a:b, c:d] = y  # type: ignore[index]
                        left[f] -= 1
                        if left[f] == 0:
                            ready.put(f)
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                ready.put(-1)

        threads = [threading.Thread(target=device_loop, args=(d,), daemon=True) for d in devices]
        for th in threads:
            th.start()
        done_ms: dict[int, float] = {}
        results: dict[int, np.ndarray] = {}
        while len(done_ms) < len(frames):
            f = ready.get(timeout=clock.wall(3600))
            if f < 0:
                raise RuntimeError(f"a device failed during FTP: {errors[0]!r}")
            out = outs[f]
            assert out is not None
            results[f] = np.asarray(rt.compute(self.key, out, rid0 + f, method="tail", kwargs={"start": fused}))
            t_f = clock.now_ns()
            done_ms[f] = (t_f - t0) / 1e6
            rt.span("request", t0, t_f, request_id=rid0 + f, devices=len(devices), config=label, frame=f)
        for th in threads:
            th.join()
        return {"frame_ms": [done_ms[f] for f in range(len(frames))], "tiles_per_device": taken,
                "outputs": np.concatenate([results[f] for f in range(len(frames))])}

    def whole(self, rt: Any, x: np.ndarray, rid: int) -> dict[str, Any]:
        """The unsplit model on this node alone (the 1-device reference for latency and output)."""
        t0 = clock.now_ns()
        out = rt.compute(self.key, x, rid)
        t1 = clock.now_ns()
        return {"latency_ms": (t1 - t0) / 1e6, "output": out}


def role_params(key: str, model: str) -> dict[str, Any]:
    """The ``hsplit`` role's parameters: the feature extractor's ops and the input size."""
    from workloads.horizontal.net import wrap

    md = MODELS.get(model)
    net = wrap(md.build(md.num_classes, 0))
    return {"key": key, "ops": [asdict(o) for o in net.ops], "hw": list(md.input_shape[1:]),
            "fc_sizes": [int(net.head[i].out_features) for i in net.linears]}
