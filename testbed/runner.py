"""``run_experiment``: runs a workload on a testbed, owns the clock, seeds, results directory and manifest."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import platform
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from testbed import clock
from testbed.config.loader import REPO_ROOT, Experiment
from testbed.doctor import choose_backends
from testbed.errors import ConfigError
from testbed.metrics import SPAN_COLUMNS, ChunkWriter
from testbed.results import MANIFEST_SCHEMA_VERSION, write_json
from testbed.testbed import Testbed
from testbed.workload import WORKLOADS

logger = logging.getLogger(__name__)

PACKAGES = ["ray", "torch", "torchvision", "numpy", "pyroute2", "psutil", "pandas", "pyarrow", "pydantic"]


@dataclass
class RunOutcome:
    """What a run produced."""

    run_id: str
    path: Path
    status: str
    summary: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def git_revision() -> dict[str, Any]:
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=5).stdout.strip())
        return {"revision": rev or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def host_info() -> dict[str, Any]:
    import psutil

    from testbed.emulation.cgroups import cgroup_mode

    return {"hostname": platform.node(), "kernel": platform.release(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "governor": _governor(),
            "loadavg": list(os.getloadavg()), "memory_bytes": psutil.virtual_memory().total,
            "python": platform.python_version(), "cgroup": cgroup_mode(), "euid": os.geteuid()}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _governor() -> str | None:
    """cpu0's cpufreq governor; None where the host exposes none (most VMs)."""
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def catalog_used(exp: Experiment) -> dict[str, Any]:
    """The catalog entries this run's nodes and links resolved to, as they were when it ran."""
    from testbed.config.loader import load_catalog

    t = exp.topology
    hw = {v.hardware.name: v.hardware.model_dump(mode="json") for v in t.nodes.values()}
    names = {lk.link_class for lk in t.links if lk.link_class}
    links = load_catalog().link_classes
    return {"hardware_classes": dict(sorted(hw.items())),
            "link_classes": {n: links[n].model_dump(mode="json") for n in sorted(names) if n in links}}


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "absent"
    return out


@functools.cache
def installed_packages() -> dict[str, str]:
    """Every distribution in this environment and its version (the run's full freeze, to compare with
    constraints.txt)."""
    from importlib.metadata import distributions

    return dict(sorted((d.metadata["Name"] or "?", d.version) for d in distributions()))


def _raise_interrupt(signum: int, _frame: Any) -> None:
    # further signals are ignored until teardown is done: a second Ctrl-C must not strand half of it
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def _install_handlers() -> dict[int, Any]:
    """SIGTERM and SIGINT unwind the run like Ctrl-C, so teardown runs on every exit path."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGINT)}


@contextmanager
def _signals_raise() -> Iterator[None]:
    old = _install_handlers()
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def check_privileges(exp: Experiment, links: str, compute: str) -> None:
    """Refuse, before anything is created, backends this process cannot use."""
    from testbed.emulation.cgroups import cgroup_mode

    if links != "userspace" and os.geteuid() != 0:
        raise ConfigError(f"the {links} link backend needs root (network namespaces and tc)", file=exp.source,
                          path="backends.links", fix="run as root, or set backends: {links: userspace}")
    if links in ("mininet", "mininet-wifi"):
        from testbed.emulation.mnbackend import MininetNetwork
        from testbed.errors import TestbedError

        try:
            MininetNetwork.check_mininet(links == "mininet-wifi")
        except TestbedError as exc:
            raise ConfigError(str(exc), file=exp.source, path="backends.links",
                              fix="see testbed doctor; or set backends: {links: kernel}") from None
    if compute == "cgroup" and (os.geteuid() != 0 or cgroup_mode() == "none"):
        raise ConfigError("the cgroup compute backend needs root and cgroup v1 or v2 cpu+memory controllers",
                          file=exp.source, path="backends.compute",
                          fix="run as root on a host with cgroups, or set backends: {compute: dilation}")


def check_host(exp: Experiment) -> None:
    """Refuse, before anything is created, what this host cannot give: a CPU spike of more busy processes than it
    has cores (they would only share the cores, and the spike would not be the load the file asks for)."""
    host = os.cpu_count() or 1
    events = exp.spec.scenario.events if exp.spec.scenario is not None else []
    for i, ev in enumerate(events):
        cores = getattr(ev, "cores", None)
        if cores is not None and cores > host:
            raise ConfigError(f"cores {cores} is more than this host's {host}: a spike is one busy process per core, "
                              "and more processes than cores only share them", file=exp.source,
                              path=f"scenario.events[{i}].cores", fix=f"use at most {host} on this host")


def new_run_dir(out_root: str | Path, experiment: str) -> tuple[str, Path]:
    """A fresh, never reused run directory."""
    while True:
        run_id = secrets.token_hex(4)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(out_root) / experiment / f"{stamp}-{run_id}"
        if not path.exists():
            path.mkdir(parents=True)
            return run_id, path


def topology_dict(exp: Experiment) -> dict[str, Any]:
    t = exp.topology
    return {"name": t.name, "source": t.source, "address_pool": t.address_pool,
            "nodes": {n: {"tier": v.tier.value, "hardware_class": v.hardware.name, "address": v.address,
                          "pool": v.pool} for n, v in t.nodes.items()},
            "links": [{"index": lk.index, "a": lk.a, "b": lk.b, "link_class": lk.link_class,
                       "up": lk.up.model_dump(), "down": lk.down.model_dump(), "a_address": lk.a_address,
                       "b_address": lk.b_address} for lk in t.links]}


def run_experiment(exp: Experiment, out_root: str | Path = "results", address: str | None = None,
                   progress: Callable[[int, int, str], None] | None = None, fit_caps: bool = True,
                   drain_every_s: float = 2.0) -> RunOutcome:
    """Run an experiment end to end and write its results directory.

    Raises
    ------
    TestbedError
        Configuration, privilege or emulation problems (the run directory is kept, marked failed).
    KeyboardInterrupt
        On SIGINT/SIGTERM, after teardown (the run is marked interrupted).
    """
    spec = exp.spec
    links, compute, reasons = choose_backends(spec.backends.links, spec.backends.compute)
    check_privileges(exp, links, compute)
    check_host(exp)
    actions = []
    if spec.scenario is not None:
        from testbed.scenario import timeline

        actions = timeline(spec.scenario, exp.topology, exp.source, Path(exp.source).parent, spec.seed)
        if links == "mininet-wifi":
            # mininet-wifi moves the stations itself (the backend translates scenario.mobility), and its radio
            # links follow its propagation model: the scenario may not re-shape them or take them down
            from testbed.emulation.mnbackend import wireless_links

            actions = [a for a in actions if not a.source.startswith("mobility")]
            radio = wireless_links(exp.topology)
            radio_nodes = {n for pair in radio.values() for n in pair}
            for a in actions:
                if a.link in radio or (a.kind in ("leave", "join") and a.node in radio_nodes):
                    what = exp.topology.links[a.link].name if a.link in radio else a.node
                    raise ConfigError(f"{what} is on a mininet-wifi radio link, which follows mininet-wifi's "
                                      "propagation and mobility: it cannot be re-shaped, taken down or churned",
                                      file=exp.source, path=f"scenario.{a.source}",
                                      fix="change only wired links, or use backends: {links: kernel}")
        if links == "userspace" and any(a.kind in ("down", "leave") for a in actions):
            raise ConfigError("taking a link down (down_for_s, partition, leave) needs the kernel link backend",
                              file=exp.source,
                              path="scenario.events", fix="run as root with backends: {links: kernel}, or re-shape "
                                                          "the link to a low rate instead")
    wl_cls = WORKLOADS.get(spec.workload.name)
    workload = wl_cls(exp.params, spec.requests, spec.seed, spec.duration_s)
    run_id, path = new_run_dir(out_root, spec.name)
    manifest: dict[str, Any] = {
        "schema_version": MANIFEST_SCHEMA_VERSION, "run_id": run_id, "experiment": spec.name,
        "experiment_file": exp.source, "status": "running",
        "started": dt.datetime.now(dt.UTC).isoformat(), "seed": spec.seed,
        "config": spec.model_dump(mode="json"), "workload_params": exp.params.model_dump(mode="json"),
        "backends": {"links": links, "compute": compute, "why": reasons}, "host": host_info(),
        "packages": package_versions(), "installed": installed_packages(), "git": git_revision(), "warnings": [],
        "catalog": catalog_used(exp),
    }
    write_json(path / "manifest.json", manifest)
    write_json(path / "topology.resolved.json", topology_dict(exp))
    spans_w, res_w = ChunkWriter(path / "spans", SPAN_COLUMNS), ChunkWriter(path / "resources")
    summary = pd.DataFrame()
    t_start = time.monotonic()  # wall: run duration
    tb: Testbed | None = None
    raising = False  # the run itself failed or was interrupted: that error propagates, nothing may mask it
    try:
        with _signals_raise():
            tb = Testbed(exp.topology, run_id, spec.seed, links, compute, workload.node_models(exp.topology), address,
                         spec.scenario.mobility if spec.scenario is not None else None,
                         time_dilation=spec.time_dilation, max_time_dilation=spec.max_time_dilation,
                         approximate_classes=spec.approximate_classes, source=exp.source)
            with tb:
                _install_handlers()  # ray.init installs its own SIGTERM handler (sys.exit); ours must win
                assert tb.dilation is not None
                rto = tb.network.tcp_rto_min_us if tb.network else None
                tcp = (f"the kernel's TCP timers, but for its minimum RTO, stretched to {rto / 1e3:g} ms in the "
                       "node namespaces (the initial RTO and delayed ACKs stay on wall time)" if rto is not None
                       else "the kernel's TCP timers (wall time)")
                manifest["time"] = {"time_dilation": tb.k, "how": tb.dilation.to_dict(), "start": clock.anchor(),
                                    "tcp_rto_min_us": rto,
                                    "note": "spans, summaries and figures are in emulated time; wall = emulated x "
                                            "time_dilation. Not dilated: per-hop transport and Ray call overheads "
                                            f"(they shrink by time_dilation in emulated time) and {tcp}"}
                manifest["backends"]["links_detail"] = tb.network.info() if tb.network else {}
                manifest["compute_plans"] = {n: p.to_dict() for n, p in tb.plans().items()}
                manifest["warnings"] = list(tb.warnings)
                manifest["setup_timings_s"] = dict(tb.timings)
                manifest["placement"] = tb.placement()
                write_json(path / "manifest.json", manifest)
                if fit_caps:
                    manifest["calibration_fit"] = tb.fit_caps()
                    manifest["compute_plans"] = {n: p.to_dict() for n, p in tb.plans().items()}
                player = None
                try:
                    workload.setup(tb)
                    if spec.scenario is not None and tb.network is not None:
                        tb.network.scenario_started()  # mininet-wifi starts its stations' walks on this clock
                    if actions:
                        from testbed.scenario import ScenarioPlayer

                        player = ScenarioPlayer(tb, actions)
                        player.start()
                    total = workload.total_steps()
                    done = 0
                    last_drain = time.monotonic()  # wall: how often spans are collected
                    if progress:
                        progress(0, total, "")
                    while True:
                        res = workload.step(tb)
                        done += res.progress
                        if progress:
                            progress(done, total, str(res.info.get("label", "")))
                        if time.monotonic() - last_drain > drain_every_s or res.done:  # wall: collection
                            s, r = tb.drain()
                            spans_w.write(s + (player.drain() if player else []))
                            res_w.write(r)
                            last_drain = time.monotonic()  # wall: collection
                        if res.done:
                            break
                    if player is not None:
                        player.stop()
                        spans_w.write(player.drain())
                        manifest["scenario"] = {"actions": len(actions), "applied": player.applied,
                                                "not_reached": len(actions) - player.applied - len(player.errors),
                                                "errors": player.errors}
                    workload.teardown(tb)
                    for name, frame in workload.artifacts().items():
                        if not frame.empty:
                            frame.to_parquet(path / f"{name}.parquet", index=False)
                    s, r = tb.drain()
                    spans_w.write(s)
                    res_w.write(r)
                    manifest["requests"] = _request_counts(tb)
                    manifest["bytes_by_pair"] = tb.byte_counters()
                    manifest["path_links"] = {f"{a}>{b}": [h.link.name + (":up" if h.src == h.link.a else ":down")
                                                          for h in exp.topology.path(a, b).hops]
                                              for a in exp.topology.nodes for b in exp.topology.nodes if a != b}
                except BaseException:
                    # interrupted (SIGINT/SIGTERM) or failed mid-run: collect what the nodes hold before teardown
                    # kills them, so every request that ran is in the results
                    _salvage(tb, spans_w, res_w, player)
                    manifest["requests"] = _request_counts(tb)
                    raise
        manifest["status"] = "complete"
    except (KeyboardInterrupt, SystemExit):
        manifest["status"] = "interrupted"
        raising = True
        raise
    except BaseException as exc:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        raising = True
        raise
    finally:
        manifest["finished"] = dt.datetime.now(dt.UTC).isoformat()
        manifest["wall_s"] = time.monotonic() - t_start  # wall: run duration
        if "time" in manifest:
            manifest["time"]["end"] = clock.anchor()  # the testbed has restored k = 1 by now: keep the run's
            manifest["time"]["end"]["time_dilation"] = manifest["time"]["time_dilation"]
            manifest["time"]["end"]["emulated_s"] = manifest["time"]["end"]["monotonic_s"] / manifest["time"][
                "time_dilation"]
            manifest["time"]["emulated_s"] = manifest["wall_s"] / manifest["time"]["time_dilation"]
            manifest["time"]["wall_s"] = manifest["wall_s"]
        manifest["rows"] = {"spans": spans_w.rows, "resources": res_w.rows}
        summary_error: BaseException | None = None
        try:
            if spans_w.rows or manifest["status"] == "complete":
                summary = _summarize(workload, path)
        except Exception as exc:  # noqa: BLE001 - recorded; it must not mask the run's own error
            summary_error = exc
            manifest["summary_error"] = f"{type(exc).__name__}: {exc}"
            if manifest["status"] == "complete":  # the run's own error, if any, stays the first
                manifest["status"] = "failed"
                manifest["error"] = f"summary: {type(exc).__name__}: {exc}"
        manifest["partial"] = manifest["status"] != "complete"
        write_json(path / "manifest.json", manifest)
        if summary_error is not None and not raising:
            raise summary_error
    return RunOutcome(run_id, path, manifest["status"], summary, manifest["warnings"], manifest)


def _salvage(tb: Testbed, spans_w: ChunkWriter, res_w: ChunkWriter, player: Any) -> None:
    """Best effort: write the spans and samples the nodes (and the scenario player) still hold."""
    try:
        if player is not None:
            player.stop()
        s, r = tb.drain(timeout=15)
        spans_w.write(s + (player.drain() if player is not None else []))
        res_w.write(r)
    except Exception as exc:  # noqa: BLE001 - the run's own error is the one that propagates
        logger.warning("could not collect the spans in flight: %s", exc)


def _request_counts(tb: Testbed) -> dict[str, Any]:
    """Requests begun and recorded, over the nodes, as of the last drain (taken with its spans, so what is recorded
    is in the results): ``lost`` are those in flight when the run ended (an interrupt or an error), which have no
    request span. Where the salvage could not drain, the counts are those of the drain before it."""
    by_node = tb.request_counts()  # as of the last drain: the final one, or the salvage's
    counted = {n: c for n, c in by_node.items() if c["started"]}  # nodes whose workload counts its requests
    started = sum(c["started"] for c in counted.values())
    recorded = sum(c["recorded"] for c in counted.values())
    return {"started": started, "recorded": recorded, "lost": max(0, started - recorded), "by_node": counted,
            "note": "requests of the workloads that count them (inference, split inference) on the nodes that "
                    "began any; lost = begun and never recorded (in flight when the run ended)"}


def _summarize(workload: Any, path: Path) -> pd.DataFrame:
    """The run's summary and findings, from the spans written to ``path``."""
    from testbed.results import load

    summary: pd.DataFrame = workload.summarize(load(path).spans)
    if not summary.empty:
        summary.to_csv(path / "summary.csv", index=False)
        write_json(path / "summary.json", json.loads(summary.to_json(orient="records")))
        found = workload.findings(summary)
        if not found.empty:
            found.to_csv(path / "findings.csv", index=False)
    return summary
