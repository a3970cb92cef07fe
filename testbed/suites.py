"""Benchmark suites that reproduce the seeds' findings: ``testbed bench seeds [--size quick|full]``.

Each entry is an experiment under ``experiments/`` (the ``full`` size runs it as it is; ``quick`` overrides
some workload parameters so the whole suite fits in about ten minutes on the project machine). Every
run's ``findings.csv`` becomes lines of PASS ("held"), FAIL ("did not hold") or INFO ("measured"), with the
paper's value and ours in the evidence. A FAIL is a finding, reported as such.
"""

from __future__ import annotations

import datetime as dt
import html
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Entry:
    name: str
    experiment: str  # under experiments/
    quick: dict[str, Any] = field(default_factory=dict)  # workload.params overrides for the quick size
    quick_skip: bool = False


SEEDS: tuple[Entry, ...] = (
    Entry("seed 001 Fig. 4 (layer scheduling)", "seed001_layer_scheduling.yaml", {"repetitions": 1}),
    Entry("Neurosurgeon: cut vs uplink", "neurosurgeon_uplink_sweep.yaml",
          {"uplink_mbit": [100, 10, 1], "requests_per_planner": 3, "planners": ["neurosurgeon_latency"]}),
    Entry("seed 002 Fig. 5 (uploading plans)", "seed002_uploading.yaml", {"models": ["alexnet"], "offloading_reps": 2}),
    Entry("seed 003 SEM vs MEM, thresholds, DDNN", "seed003_early_exit.yaml",
          {"variants": ["sem2", "sem5", "sem8", "mem"], "mem_exits": [2, 5, 8], "thresholds": [0.1, 0.5],
           "test_samples": 160, "edgent": None}),
    Entry("seed 004 DIL cost reductions", "seed004_dil.yaml",
          {"demonstrations": 20000, "test_states": 2000, "dqn_steps": 1000, "decision_time_t": [4, 6, 8],
           "testbed_demonstrations": 5000, "execute_states": 1}),
    Entry("DeepThings FTP scaling", "deepthings_yolo.yaml", {"devices": [1, 4], "grids": [[3, 3]], "frames": 2}),
    Entry("MoDNN scaling", "modnn_vgg16.yaml", quick_skip=True),  # VGG-16 on seven Pi 3Bs: minutes per point
    Entry("FedAvg vs FedSGD rounds", "fl_compare.yaml",
          {"rounds": 12, "dropouts": [], "variants": [
              {"name": "fedavg/E5", "algorithm": "fedavg", "hierarchical": False, "local_epochs": 5},
              {"algorithm": "fedsgd", "hierarchical": False, "server_lr": 0.5, "rounds": 24}]}),
    Entry("survey IX-C3: incentivized offloading on a real EVM", "chain_offloading.yaml", {"requests": 4}),
    Entry("BlockFL: recorded, validated, rewarded updates", "blockfl.yaml", {"rounds": 5}),
)

VERDICT = {"held": "PASS", "did not hold": "FAIL"}


def _experiment_file(entry: Entry, size: str, tmp: Path) -> Path:
    src = ROOT / "experiments" / entry.experiment
    if size == "full" or not entry.quick:
        return src
    spec = yaml.safe_load(src.read_text())
    spec["topology"] = str((src.parent / spec["topology"]).resolve())
    params = dict(spec["workload"].get("params") or {})
    for k, v in entry.quick.items():
        if v is None:
            params.pop(k, None)
        else:
            params[k] = v
    spec["workload"]["params"] = params
    out = tmp / entry.experiment
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def run_suite(size: str = "quick", out_root: Path = Path("results/bench"), only: str | None = None,
              progress: Any = None) -> tuple[list[dict[str, Any]], Path]:
    """Run the ``seeds`` suite; returns the verdict rows and the suite directory (summary.json, index.html)."""
    import pandas as pd

    from testbed.config.loader import load_experiment
    from testbed.report import render_report
    from testbed.runner import run_experiment

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    suite_dir = out_root / f"seeds-{size}-{stamp}"
    suite_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for entry in SEEDS:
            if only and only not in entry.name and only not in entry.experiment:
                continue
            if size == "quick" and entry.quick_skip:
                rows.append({"entry": entry.name, "finding": "(skipped in the quick size)", "verdict": "SKIP",
                             "evidence": "run with --size full", "run": ""})
                continue
            if progress:
                progress(entry.name)
            t0 = time.monotonic()
            try:
                outcome = run_experiment(load_experiment(_experiment_file(entry, size, Path(d))), suite_dir / "runs")
            except Exception as exc:  # one broken entry must not hide the others' verdicts
                rows.append({"entry": entry.name, "finding": "(the run failed)", "verdict": "ERROR",
                             "evidence": f"{type(exc).__name__}: {exc}"[:500], "run": ""})
                continue
            wall = time.monotonic() - t0
            try:
                render_report(outcome.path)
            except Exception as exc:  # the verdicts stand without the figures
                rows.append({"entry": entry.name, "finding": "(report)", "verdict": "INFO",
                             "evidence": f"report not written: {exc}"[:300], "run": str(outcome.path)})
            f = outcome.path / "findings.csv"
            found = pd.read_csv(f) if f.exists() else pd.DataFrame()
            if found.empty:
                rows.append({"entry": entry.name, "finding": "(no findings recorded)", "verdict": "INFO",
                             "evidence": f"status {outcome.status}", "run": str(outcome.path), "wall_s": wall})
            for r in found.itertuples():
                rows.append({"entry": entry.name, "finding": str(r.finding),
                             "verdict": VERDICT.get(str(r.result), "INFO"),
                             "evidence": "" if pd.isna(r.evidence) else str(r.evidence),
                             "run": str(outcome.path), "wall_s": wall})
    from testbed.results import write_json

    write_json(suite_dir / "summary.json", rows)
    _html(rows, suite_dir, size)
    return rows, suite_dir


def _html(rows: list[dict[str, Any]], suite_dir: Path, size: str) -> None:
    colour = {"PASS": "#1a7f37", "FAIL": "#cf222e", "ERROR": "#cf222e"}
    body = [f"<h1>Seeds suite ({size})</h1><table border=1 cellpadding=4><tr><th>entry</th><th>finding</th>"
            "<th>verdict</th><th>evidence (ours vs the paper)</th><th>run</th></tr>"]
    for r in rows:
        run = Path(r["run"]) if r.get("run") else None
        link = (f"<a href='{html.escape(str(run.relative_to(suite_dir)))}/report.html'>report</a>"
                if run and (run / "report.html").exists() and suite_dir in run.parents else "")
        body.append(f"<tr><td>{html.escape(r['entry'])}</td><td>{html.escape(r['finding'])}</td>"
                    f"<td style='color:{colour.get(r['verdict'], '#555')}'><b>{r['verdict']}</b></td>"
                    f"<td>{html.escape(r['evidence'])}</td><td>{link}</td></tr>")
    body.append("</table>")
    (suite_dir / "index.html").write_text("<html><body>" + "".join(body) + "</body></html>")


def run_scale(sizes: tuple[int, ...] = (10, 50, 200), out_root: Path = Path("results/bench"), pool: int = 50,
              links: str = "auto") -> tuple[list[dict[str, Any]], Path]:
    """Start-up time and memory of a testbed of N emulated devices (pools of ``pool``) plus one cloud node,
    each running one FedAvg round with a fifth of the devices; one run per size, written with a plot."""
    import pandas as pd

    from testbed.config.loader import load_experiment
    from testbed.results import load
    from testbed.runner import run_experiment

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out_root / f"scale-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            pools = [min(pool, n - i) for i in range(0, n, pool)]
            nodes = "\n".join(f"  - {{name: d{j}_, tier: device, hardware_class: rpi4b, count: {c}}}"
                              for j, c in enumerate(pools))
            lks = "\n".join(f"  - {{ends: [d{j}_, cloud], link_class: wifi_n}}" for j in range(len(pools)))
            topo = Path(d) / f"scale{n}.yaml"
            topo.write_text(f"name: scale{n}\nnodes:\n{nodes}\n  - {{name: cloud, tier: cloud, hardware_class: "
                            f"cloud_gpu}}\nlinks:\n{lks}\n")
            exp = Path(d) / f"exp{n}.yaml"
            exp.write_text(f"name: scale{n}\ntopology: {topo}\nbackends: {{links: {links}}}\nworkload:\n"
                           "  name: federated\n  params: {rounds: 1, variants: [{algorithm: fedavg, fraction: 0.2}]}\n")
            t0 = time.monotonic()
            outcome = run_experiment(load_experiment(exp), out / "runs")
            wall = time.monotonic() - t0
            run = load(outcome.path)
            setup = run.manifest.get("setup_timings_s", {})
            res = run.resources
            rss = float(res.groupby(["node", "process"]).rss_bytes.max().sum()) if not res.empty else float("nan")
            rows.append({"devices": n, "processes": 2 * (len(pools) + 1), "status": outcome.status,
                         "ray_init_s": setup.get("ray_init_s"), "network_build_s": setup.get("network_build_s"),
                         "actors_start_s": setup.get("actors_start_s"), "run_wall_s": wall,
                         "links": run.manifest.get("backends", {}).get("links"),
                         "rss_total_mib": rss / 2**20, "rss_per_device_mib": rss / 2**20 / n})
    df = pd.DataFrame(rows)
    (out / "summary.json").write_text(df.to_json(orient="records", indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(df.devices, df.network_build_s, marker="o", label="network build")
    ax[0].plot(df.devices, df.actors_start_s, marker="o", label="actors start")
    ax[0].plot(df.devices, df.run_wall_s, marker="o", label="whole run (1 FL round)")
    ax[0].set_xlabel("emulated devices")
    ax[0].set_ylabel("s")
    ax[0].legend()
    ax[1].plot(df.devices, df.rss_total_mib, marker="o")
    ax[1].set_xlabel("emulated devices")
    ax[1].set_ylabel("resident memory, all processes (MiB)")
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)
    return rows, out


# ``testbed bench experiments``: every file under experiments/ at a reduced size (issue 17: "every shipped
# experiment runs"). The overrides are dotted paths, as ``testbed run --set`` takes them; each keeps what the file
# is about (its planners, variants, scenario events) and cuts what only adds samples (requests, rounds, points of a
# parameter sweep). A file with no entry here is refused by the unit tests, so a new experiment gets one.
# ``None``: the file needs what this machine may not have (the project's Vagrant VM).
REDUCED: dict[str, dict[str, Any] | None] = {
    "adaptive_replanning.yaml": {"workload.params.requests_per_planner": 4,
                                 "workload.params.link_change.after_requests": 2},
    "blockfl.yaml": {"workload.params.rounds": 2},
    "chain_offloading.yaml": {"workload.params.requests": 2},
    "deepthings_link_sweep.yaml": {"workload.params.devices": [1, 4], "workload.params.link_mbit": [90],
                                   "workload.params.frames": 2},
    "deepthings_yolo.yaml": {"workload.params.devices": [1, 4], "workload.params.grids": [[3, 3]],
                             "workload.params.frames": 2},
    "demo.yaml": {"workload.params.requests_per_device": 2},
    "device_churn.yaml": {"workload.params.requests_per_device": 120},  # 12 s: both events and the rejoin
    "edge_crash.yaml": {},  # 7.5 s of frames: the crash (5 s) falls inside
    "fl_async.yaml": {"workload.params.rounds": 2},
    "fl_churn.yaml": {"workload.params.rounds": 4},
    "fl_compare.yaml": {"workload.params.rounds": 2, "workload.params.variants[2].rounds": 2},
    "fl_scale500.yaml": {"workload.params.rounds": 1},
    "mobility_walkaway.yaml": {"workload.params.requests_per_planner": 100},
    "mobility_walkaway_wifi.yaml": None,  # mininet-wifi and mac80211_hwsim: the Vagrant VM
    "modnn_vgg16.yaml": {"workload.params.devices": [1, 2], "workload.params.link_mbit": [90],
                         "workload.params.frames": 1},
    "neurosurgeon_alexnet_sweep.yaml": {"workload.params.uplink_mbit": [100, 1],
                                        "workload.params.requests_per_planner": 2},
    "neurosurgeon_regression_sweep.yaml": {"workload.params.uplink_mbit": [100, 1],
                                           "workload.params.requests_per_planner": 2},
    "neurosurgeon_uplink_sweep.yaml": {"workload.params.uplink_mbit": [100, 1],
                                       "workload.params.requests_per_planner": 2},
    "seed001_executed.yaml": {"workload.params.frames_per_task": 2},
    "seed001_layer_scheduling.yaml": {"workload.params.repetitions": 1},
    "seed002_offloading_executed.yaml": {"workload.params.models": ["alexnet"],
                                         "workload.params.requests_per_algorithm": 2},
    "seed002_upload_while_query.yaml": {"workload.params.models": ["alexnet"]},
    "seed002_uploading.yaml": {"workload.params.models": ["alexnet"], "workload.params.offloading_reps": 2},
    "seed003_early_exit.yaml": {"workload.params.epochs": 3, "workload.params.thresholds": [0.1, 0.8],
                                "workload.params.edgent.batches": 4,
                                "workload.params.edgent.change_after_batches": 2},
    "seed004_dil.yaml": {"workload.params.demonstrations": 20000, "workload.params.test_states": 2000,
                         "workload.params.dqn_steps": 1000, "workload.params.decision_time_t": [4, 6, 8],
                         "workload.params.testbed_demonstrations": 5000, "workload.params.execute_states": 1},
    "split_compression.yaml": {"workload.params.requests_per_planner": 2},
}


def shipped_experiments() -> list[Path]:
    """The experiment files the project ships (``experiments/*.yaml``), in name order."""
    return sorted((ROOT / "experiments").glob("*.yaml"))


def run_shipped(out_root: Path = Path("results/bench"), only: str | None = None,
                progress: Any = None) -> tuple[list[dict[str, Any]], Path]:
    """Run every shipped experiment at its ``REDUCED`` size, one after another; a row per file with its status
    (complete, failed, error, skipped), wall and emulated seconds, the time dilation and the first error. One
    failing file does not stop the others. Writes ``summary.json`` in the returned directory."""
    from testbed.config.loader import load_experiment
    from testbed.runner import run_experiment

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out_root / f"experiments-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for f in shipped_experiments():
        if only and only not in f.name:
            continue
        row: dict[str, Any] = {"experiment": f.name, "status": "", "wall_s": None, "emulated_s": None,
                               "time_dilation": None, "error": "", "run": ""}
        rows.append(row)
        if f.name not in REDUCED:
            row.update(status="error", error=f"no reduced size for {f.name}: add it to REDUCED in testbed/suites.py")
            continue
        over = REDUCED[f.name]
        if over is None:
            from testbed.emulation.mnbackend import find_mininet

            py, why = find_mininet(wifi=True)
            if py is None:
                row.update(status="skipped", error=f"needs the project's Vagrant VM ({why})")
                continue
            over = {}
        if progress:
            progress(f.name)
        t0 = time.monotonic()
        try:
            outcome = run_experiment(load_experiment(f, overrides=over), out / "runs")
        except Exception as exc:  # one broken file must not hide the others
            row.update(status="failed", wall_s=time.monotonic() - t0, error=f"{type(exc).__name__}: {exc}"[:500])
            continue
        t = outcome.manifest.get("time", {})
        row.update(status=outcome.status, wall_s=time.monotonic() - t0, emulated_s=t.get("emulated_s"),
                   time_dilation=t.get("time_dilation"), run=str(outcome.path),
                   error=str(outcome.manifest.get("error") or "")[:500])
    from testbed.results import write_json

    write_json(out / "summary.json", rows)
    return rows, out
