"""Host calibration: how fast this host runs each reference model, and the caps that make a
hardware class reproduce its published latency.

* ``dilation``: slowdown = published latency / host latency (one thread), applied to measured
  thread CPU time.
* ``cgroup``: a CFS quota (in cores) for a one-thread compute process, first from the same
  ratio, then *fitted* by measuring the median latency under the quota and correcting it
  (CFS makes latency bursty, so the analytic quota is only a starting point).

A class with no published figure for a model uses its figures on other models (geometric mean of
its ratios); a class with no figure at all, or faster than this host, runs at host speed and is
flagged. Results are cached per host in ``$TESTBED_CALIBRATION`` (default
``~/.cache/testbed/calibration.json``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.config.models import HardwareClass


def calibration_path() -> Path:
    return Path(os.environ.get("TESTBED_CALIBRATION", Path.home() / ".cache" / "testbed" / "calibration.json"))


def host_fingerprint() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        tv = str(torch.__version__)
    except ImportError:  # pragma: no cover
        tv = "?"
    return f"{platform.node()}|{cpu}|{os.cpu_count()}|torch {tv}"


@dataclass
class CalibrationStore:
    """Cached measurements for one host."""

    host: str = field(default_factory=host_fingerprint)
    host_ms: dict[str, float] = field(default_factory=dict)
    cgroup_cores: dict[str, float] = field(default_factory=dict)  # "class/model" -> fitted quota
    dilation_slowdown: dict[str, float] = field(default_factory=dict)  # "class/model" -> fitted factor
    fit_error_pct: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls) -> CalibrationStore:
        p = calibration_path()
        if p.exists():
            try:
                data = json.loads(p.read_text())
                if data.get("host") == host_fingerprint():
                    return cls(**data)
            except (ValueError, TypeError):
                pass
        return cls()

    def save(self) -> None:
        p = calibration_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(p)


def measure_latency_ms(model_name: str, iters: int | None = None, budget_s: float = 2.0,
                       cpu_out: list[float] | None = None) -> list[float]:
    """Batch-1 forward latencies of ``model_name`` in this process (caller sets the thread count).

    If ``cpu_out`` is given, the calling thread's CPU time per forward is appended to it.
    """
    import torch

    from testbed.workload import MODELS

    md = MODELS.get(model_name)
    model = md.build(md.num_classes, 0, None)
    x = torch.randn(1, *md.input_shape)
    out: list[float] = []
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        t_end = time.monotonic() + budget_s
        while (len(out) < iters) if iters is not None else (time.monotonic() < t_end or len(out) < 5):
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            model(x)
            out.append((time.perf_counter_ns() - t0) / 1e6)
            if cpu_out is not None:
                cpu_out.append((time.thread_time_ns() - c0) / 1e6)
            if iters is None and len(out) >= 200:
                break
    return out


def host_latency_ms(store: CalibrationStore, model_name: str) -> float:
    """Median one-thread host latency of a model (measured once per host, then cached)."""
    if model_name not in store.host_ms:
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            store.host_ms[model_name] = statistics.median(measure_latency_ms(model_name))
        finally:
            torch.set_num_threads(prev)
        store.save()
    return store.host_ms[model_name]


# Below this share of a core a CFS quota is no longer faithful: the 1 ms minimum quota, the 5 ms bandwidth slice
# and the 1 ms carry-over are fixed in wall time (reference/time-dilation.md §3.4; host-facts: >= 25 % holds to
# +-3 %, 10 % gives 0.07-0.09x). Such nodes use the dilation backend, whatever the run asked for, and keep their
# cgroup for the memory cap.
CGROUP_MIN_CORES = 0.2


@dataclass(frozen=True)
class ComputePlan:
    """How one node's compute is capped. Times are emulated unless named wall."""

    node: str
    hardware_class: str
    model: str | None
    backend: str  # cgroup | dilation | none (this node's; may differ from the run's, see backend_reason)
    slowdown: float  # class time / host one-thread CPU time (1.0 = host speed), emulated ms per host CPU ms
    target_ms: float | None  # the published (or derived) class latency for the model
    cpu_cores: float | None  # cgroup quota in cores (None: unlimited)
    period_us: int
    memory_bytes: int | None
    threads: int
    host_speed: bool  # True: the class is faster than the host at this k, or has no figure; runs at host speed
    basis: str  # how the numbers were obtained
    time_dilation: float = 1.0
    wall_target_ms: float | None = None  # target_ms x k: how long one call lasts on the host
    backend_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_key(hc_name: str, model: str, k: float) -> str:
    """Cache key of a fitted cap: a cgroup quota depends on k (the wall time it must stretch a call to)."""
    return f"{hc_name}/{model}" if k == 1.0 else f"{hc_name}/{model}@k{k:g}"


def class_target_ms(store: CalibrationStore, hc: HardwareClass, model: str) -> tuple[float | None, str]:
    """The latency ``hc`` should show on ``model``: published, or derived from its other figures."""
    ref = hc.reference_latency_ms.get(model)
    if ref is not None:
        return ref.value, f"published {ref.value} ms ({ref.framework}; {ref.source})"
    if not hc.reference_latency_ms:
        return None, "no published latency for this class"
    cheap = sorted(hc.reference_latency_ms.items(), key=lambda kv: kv[1].value)[:2]
    ratios = [r.value / host_latency_ms(store, m) for m, r in cheap]
    g = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    t = g * host_latency_ms(store, model)
    return t, f"derived {t:.1f} ms: host latency x {g:.2f}, the class's mean ratio on {', '.join(m for m, _ in cheap)}"


def plan_compute(node: str, hc: HardwareClass, model: str | None, backend: str, store: CalibrationStore,
                 k: float = 1.0) -> ComputePlan:
    """Decide the caps of one node running ``model`` at time dilation ``k``.

    The class's time ``target_ms`` lasts ``target_ms * k`` on the host. Under ``dilation`` a call is stretched to
    it by sleeping the remainder; under ``cgroup`` a CFS quota of ``host / (target * k)`` cores slows the call to
    it, unless that quota is below ``CGROUP_MIN_CORES``, where the node uses ``dilation`` instead.
    """
    mem = hc.memory_mib * 2**20 if backend == "cgroup" else None
    if model is None or backend == "none":
        return ComputePlan(node, hc.name, model, backend, 1.0, None, None, 100_000, mem, 1, True, "no model or no caps",
                           k)
    target, basis = class_target_ms(store, hc, model)
    host = host_latency_ms(store, model)
    if target is None or target * k <= host:
        why = basis if target is None else (f"{basis}; faster than this host ({host:.1f} ms) at time dilation {k:g}: "
                                             "runs at host speed")
        return ComputePlan(node, hc.name, model, backend, 1.0, target, None, 100_000, mem, 1, True, why, k,
                           None if target is None else target * k)
    reason = ""
    if backend == "cgroup" and host / (target * k) < CGROUP_MIN_CORES:
        reason = (f"a quota of {host / (target * k):.3f} cores is below the {CGROUP_MIN_CORES} a CFS quota holds "
                  f"faithfully: dilation backend")
        backend = "dilation"
    key = fit_key(hc.name, model, k)
    slowdown = store.dilation_slowdown.get(f"{hc.name}/{model}", target / host) if backend == "dilation" \
        else target / host
    # ~20 CFS periods per inference: a shorter period makes latency less lumpy (about +-1 period), and
    # the fit below absorbs the throughput the kernel loses to short periods (host-facts §4).
    period = int(min(20_000, max(2_000, target * k * 1000 / 20)))
    cores = store.cgroup_cores.get(key, host / (target * k)) if backend == "cgroup" else None
    if backend == "cgroup":
        fitted = " (fitted on this host)" if key in store.cgroup_cores else " (analytic, not yet fitted)"
    else:
        fitted = "; whole-model calls paced to the class's time"
    return ComputePlan(node, hc.name, model, backend, slowdown, target, cores, period, mem, 1, False,
                       f"{basis}; host {host:.1f} ms; slowdown {slowdown:.2f}{fitted}", k, target * k, reason)
