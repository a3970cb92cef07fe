"""``testbed sweep SWEEP.yaml``: one experiment over a grid (or list) of parameter values, every point an
independent run scheduled as a Ray task on the cluster, resumable, with a combined table and plots.

A point overrides values of the experiment file by dotted path (``workload.params.requests``,
``backends.links``, ``seed``), or of its topology file with a ``topology.`` prefix
(``topology.links[0].link_class``). Every point's files are written under the sweep's directory before
anything runs, and each is validated like any experiment, so a bad value stops the sweep before it starts.
A point whose run completed is skipped when the sweep runs again. A point whose Ray node dies is retried
by Ray on another node (``max_retries``); what its dead run left in the kernel is cleaned at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from testbed.config.models import _check_name
from testbed.errors import ConfigError


class SweepSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    experiment: str
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    points: list[dict[str, Any]] = Field(default_factory=list)
    repetitions: PositiveInt = 1  # each point runs this many times, with seeds seed, seed+1, ...
    parallel: PositiveInt | None = None  # points in flight at once; default: one per Ray node
    resources: dict[str, float] = Field(default_factory=dict)  # what each point asks of a Ray node
    num_cpus: float = Field(1.0, ge=0)
    max_retries: int = Field(2, ge=0)  # Ray re-runs a point whose node died this many times
    fit_caps: bool = True
    metrics: list[str] = Field(default_factory=list)  # summary columns to plot; default: the numeric ones

    # the name is a folder under the results root: an identifier, so that no name ('../x', '/etc') reaches outside
    _name = field_validator("name")(_check_name)


def point_id(overrides: dict[str, Any], rep: int) -> str:
    return hashlib.sha1(json.dumps([overrides, rep], sort_keys=True, default=str).encode()).hexdigest()[:10]


def expand(spec: SweepSpec) -> list[tuple[dict[str, Any], int]]:
    """Every (overrides, repetition) the sweep runs, in a stable order."""
    combos: list[dict[str, Any]] = []
    if spec.grid:
        keys = list(spec.grid)
        combos += [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*spec.grid.values())]
    combos += [dict(p) for p in spec.points]
    if not combos:
        combos = [{}]
    return [(c, r) for c in combos for r in range(spec.repetitions)]


def prepare(sweep_path: str | Path, out_root: str | Path) -> tuple[SweepSpec, Path, list[dict[str, Any]]]:
    """Read the sweep file, write every point's experiment and topology files, and validate each.
    Raises ``ConfigError`` (naming the sweep file, the point and the path) before anything runs."""
    from testbed.config.loader import apply_overrides, load_experiment, read_yaml, resolve_relative, validate_model

    sweep_path = Path(sweep_path)
    spec: SweepSpec = validate_model(SweepSpec, read_yaml(sweep_path), str(sweep_path))
    exp_path = resolve_relative(sweep_path, spec.experiment)
    if not exp_path.exists():
        raise ConfigError(f"experiment file {spec.experiment!r} not found", file=str(sweep_path), path="experiment",
                          fix="give a path relative to the sweep file")
    base = read_yaml(exp_path)
    topo_path = resolve_relative(exp_path, base["topology"])
    topo_base = read_yaml(topo_path)
    root = Path(out_root) / "sweeps" / spec.name
    points = []
    for overrides, rep in expand(spec):
        exp = json.loads(json.dumps(base))
        topo = json.loads(json.dumps(topo_base))
        for k, v in overrides.items():
            where = f"{'grid' if k in spec.grid else 'points'}.{k}"
            if k.startswith("topology."):
                apply_overrides(topo, {k.removeprefix("topology."): v}, str(sweep_path), "topology",
                                prefix="topology.", where=where)
            else:
                apply_overrides(exp, {k: v}, str(sweep_path), "experiment", where=where)
        exp["seed"] = int(exp.get("seed", 0)) + rep
        pid = point_id(overrides, rep)
        pdir = root / "points" / pid
        pdir.mkdir(parents=True, exist_ok=True)
        (pdir / "topology.yaml").write_text(yaml.safe_dump(topo, sort_keys=False))
        exp["topology"] = str((pdir / "topology.yaml").resolve())
        exp["name"] = f"{spec.name[:21]}_{pid}"
        (pdir / "experiment.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
        try:
            load_experiment(pdir / "experiment.yaml")
        except ConfigError as e:
            raise ConfigError(f"point {overrides} (repetition {rep}) is not a valid experiment: {e}",
                              file=str(sweep_path), path="grid" if spec.grid else "points") from None
        points.append({"id": pid, "overrides": overrides, "rep": rep, "dir": str(pdir)})
    return spec, root, points


def validate_sweep(sweep_path: str | Path) -> int:
    """Check a sweep file and every point it expands to, as ``prepare`` does, writing nothing that stays (the
    points' files go to a temporary directory); returns the number of runs. Raises ``ConfigError``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tb-validate-") as tmp:
        return len(prepare(sweep_path, tmp)[2])


def is_sweep(data: dict[str, Any]) -> bool:
    """Whether a file's mapping is a sweep (it names an experiment file) rather than an experiment."""
    return isinstance(data.get("experiment"), str) and "workload" not in data


def _run_point(point_dir: str, runs_root: str, fit_caps: bool) -> dict[str, Any]:
    """One point, inside a Ray task: run its experiment and report where and how it went."""
    import os
    import socket

    import ray

    from testbed.config.loader import load_experiment
    from testbed.runner import run_experiment

    node = ray.get_runtime_context().get_node_id()
    with open(Path(point_dir, "attempts.jsonl"), "a") as f:  # one line per start: a retried point has several
        f.write(json.dumps({"ray_node": node, "pid": os.getpid(), "t": time.time()}) + "\n")
    t0 = time.monotonic()
    out = run_experiment(load_experiment(Path(point_dir) / "experiment.yaml"), runs_root, fit_caps=fit_caps)
    return {"status": out.status, "run_dir": str(out.path), "ray_node": node, "host": socket.gethostname(),
            "wall_s": time.monotonic() - t0, "summary": out.summary.to_dict("records")}


def run_sweep(sweep_path: str | Path, out_root: str | Path = "results", address: str | None = None,
              parallel: int | None = None,
              progress: Callable[[int, int, str], None] | None = None) -> tuple[pd.DataFrame, Path]:
    """Run (or resume) a sweep; returns the combined table and the sweep's directory."""
    import ray

    spec, root, points = prepare(sweep_path, out_root)
    started = False
    if not ray.is_initialized():
        from testbed.control import init_ray

        init_ray(address)
        started = True
    try:
        todo = [p for p in points if _status(p) != "complete"]
        skipped = len(points) - len(todo)
        width = parallel or spec.parallel or max(1, len([n for n in ray.nodes() if n.get("Alive")]))  # type: ignore[no-untyped-call]
        task = ray.remote(_run_point).options(num_cpus=spec.num_cpus, resources=spec.resources or None,
                                              max_retries=spec.max_retries, retry_exceptions=False)
        runs_root = str((root / "runs").resolve())
        pending: dict[Any, dict[str, Any]] = {}
        done = skipped
        if progress:
            progress(done, len(points), f"{skipped} already done")
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < width:
                p = queue.pop(0)
                pending[task.remote(p["dir"], runs_root, spec.fit_caps)] = p
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                p = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # the run failed, or its node died more often than max_retries
                    lines = [ln for ln in str(e).splitlines() if ln.strip()]
                    res = {"status": "failed", "error": f"{type(e).__name__}: " + " | ".join(lines[-3:])[:600]}
                attempts = _attempts(p)
                Path(p["dir"], "point.json").write_text(json.dumps(
                    dict(res, id=p["id"], overrides=p["overrides"], rep=p["rep"], attempts=attempts), default=str))
                done += 1
                if progress:
                    progress(done, len(points), f"{p['id']} {res['status']}")
    finally:
        from testbed.lifecycle.cleanup import clean

        clean(None)  # runs whose owners died with their Ray node: their namespaces, cgroups, routes
        if started:
            ray.shutdown()
    table = combine(spec, root, points)
    return table, root


def _status(p: dict[str, Any]) -> str:
    f = Path(p["dir"], "point.json")
    if not f.exists():
        return "new"
    return str(json.loads(f.read_text()).get("status", "new"))


def _attempts(p: dict[str, Any]) -> list[str]:
    """The Ray nodes the point was started on, in order (more than one: Ray re-ran it elsewhere)."""
    f = Path(p["dir"], "attempts.jsonl")
    return [json.loads(line)["ray_node"] for line in f.read_text().splitlines() if line] if f.exists() else []


def combine(spec: SweepSpec, root: Path, points: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (point, summary row): the point's values, where it ran, and its summary."""
    rows = []
    for p in points:
        f = Path(p["dir"], "point.json")
        if not f.exists():
            continue
        rec = json.loads(f.read_text())
        head = {"point": p["id"], "rep": p["rep"], **{k: json.dumps(v) if isinstance(v, list | dict) else v
                                                     for k, v in p["overrides"].items()},
                "status": rec.get("status"), "ray_node": rec.get("ray_node"), "wall_s": rec.get("wall_s"),
                "attempts": len(rec.get("attempts") or []),
                "run_dir": rec.get("run_dir"), "error": rec.get("error", "")}
        for s in rec.get("summary") or [{}]:
            rows.append({**head, **s})
    df = pd.DataFrame(rows)
    df.to_csv(root / "sweep.csv", index=False)
    if not df.empty:
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(root / "sweep.parquet")
        _plot(spec, df, root)
    return df


def _plot(spec: SweepSpec, df: pd.DataFrame, root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [k for k in spec.grid if k in df.columns] or [k for k in {k for p in spec.points for k in p}
                                                          if k in df.columns]
    fixed = {"point", "rep", "status", "ray_node", "wall_s", "attempts", "run_dir", "error", *axes}
    metrics = spec.metrics or [c for c in df.columns if c not in fixed and pd.api.types.is_numeric_dtype(df[c])][:4]
    if not axes or not metrics:
        return
    x = axes[0]
    # summary rows are told apart by their text columns (phase, device, variant, ...): one line each, unless
    # that makes more than 12 lines, then by the first of them only (the others are averaged; the CSV has all)
    label_cols = [c for c in df.columns if c not in fixed and not pd.api.types.is_numeric_dtype(df[c])
                  and not pd.api.types.is_bool_dtype(df[c])]
    label_cols = [c for c in ("phase", "variant", "device", "planner") if c in label_cols] or label_cols[:1]
    series = axes[1:] + label_cols
    while len(series) > 1 and df.groupby(series, dropna=False).ngroups > 12:
        series = series[:-1]
    fig, ax = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for a, m in zip(ax[0], metrics, strict=True):
        if m not in df.columns:
            continue
        groups = df.groupby(series, dropna=False) if series else [((), df)]
        for key, g in groups:
            agg = g.groupby(x, sort=False)[m].agg(["mean", "std"]).reset_index()
            lab = ", ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))) or m
            a.errorbar(agg[x].astype(str), agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3, label=lab)
        a.set_xlabel(x)
        a.set_ylabel(m)
        a.grid(alpha=0.3)
    ax[0][0].legend(fontsize=7)
    fig.suptitle(f"sweep {spec.name}: mean ± std over repetitions"
                 + (f" (lines: {', '.join(series)})" if series else ""))
    fig.savefig(root / "sweep.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
