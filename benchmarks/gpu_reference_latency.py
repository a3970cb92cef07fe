"""Batch-1 inference latency of the testbed's torchvision models on a real GPU (the cloud GPU class, measured).

Standalone on purpose: it runs on a lent accelerator machine whose Python has torch and torchvision but not
this project's other dependencies. The models are built exactly as ``workloads/models.py`` builds them
(torchvision architecture, random weights, eval mode, 1000 classes, 3x224x224 input).

For each model and precision (fp32; fp16 with the model and input in half precision) it reports, over
``--iters`` requests after ``--warmup``:
* ``forward``: the input already on the GPU, timed by CUDA events (what published GPU latencies quote);
* ``end_to_end``: a CPU tensor in and CPU logits out (copy in, forward, copy out, synchronised), timed by the
  wall clock: what a cloud node of the testbed does per request, since its input arrives over the network;
* ``forward_again``: ``forward`` repeated after the others (a check on clock ramp-up);
* ``cuda_graph``: the forward captured once and replayed as a CUDA graph (no Python or launch overhead).

    python3 benchmarks/gpu_reference_latency.py --out gpu_latency.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

MODELS = ("alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def gpu_times(iters: int, fn: Callable[..., object], *fn_args: object) -> list[float]:
    """``iters`` calls of ``fn(*fn_args)``, each timed on the GPU by CUDA events (ms)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(iters):
        start.record()
        fn(*fn_args)
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def main() -> None:
    import torch
    import torchvision

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_latency.json")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    rows = []
    for arch in MODELS:
        torch.manual_seed(0)
        base = getattr(torchvision.models, arch)(weights=None, num_classes=1000).eval()
        for prec in ("fp32", "fp16"):
            dtype = torch.float16 if prec == "fp16" else torch.float32
            model = base.to(dev, dtype=dtype)
            x_cpu = torch.rand(1, 3, 224, 224)
            x_gpu = x_cpu.to(dev, dtype=dtype)
            e2e: list[float] = []
            with torch.inference_mode():
                for _ in range(args.warmup):
                    model(x_gpu)
                torch.cuda.synchronize()
                fwd = gpu_times(args.iters, model, x_gpu)
                for _ in range(args.iters):
                    t0 = time.perf_counter()
                    y = model(x_cpu.to(dev, dtype=dtype, non_blocking=False)).float().cpu()
                    e2e.append((time.perf_counter() - t0) * 1e3)
                    assert y.shape == (1, 1000)
                # the same again, after the clocks have had the whole run to settle
                fwd2 = gpu_times(args.iters, model, x_gpu)
                # CUDA graph replay: the forward without Python and launch overhead (what a tuned server gets)
                static_x = x_gpu.clone()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        model(static_x)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    model(static_x)
                graph = gpu_times(args.iters, g.replay)
            for kind, xs in (("forward", fwd), ("end_to_end", e2e), ("forward_again", fwd2), ("cuda_graph", graph)):
                rows.append({"model": arch, "precision": prec, "timing": kind, "median_ms": statistics.median(xs),
                             "p95_ms": pct(xs, 0.95), "min_ms": min(xs), "n": len(xs)})
                print(f"{arch:13s} {prec} {kind:10s} median {statistics.median(xs):7.3f} ms  "
                      f"p95 {pct(xs, 0.95):7.3f} ms", flush=True)
            model = base = base.float().cpu()
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
            "batch": 1, "input": [3, 224, 224], "iters": args.iters, "warmup": args.warmup}
    with open(args.out, "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
