"""``testbed``: one typer app, one small function per command, each calling one library function."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from testbed.errors import TestbedError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Edge-AI emulation testbed: run topologies of devices, edge nodes and clouds on Ray.")
# the terminal's width; with no terminal (a pipe, a CI log) COLUMNS if set, else 160, so that tables stay readable
console = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=160)
err_console = Console(stderr=True)


def fail(exc: TestbedError) -> None:
    err_console.print(f"[bold red]error[/] ({type(exc).__name__}): {exc}", highlight=False)
    raise typer.Exit(exc.exit_code)


def table_from_frame(df: object, title: str = "", floatfmt: str = "{:.2f}") -> Table:
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c))
    for _, row in df.iterrows():
        t.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row.tolist()])
    return t


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="print the version and exit", is_eager=True)]
          = False,
          log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR")] = "WARNING"
          ) -> None:
    """Edge-AI emulation testbed: run topologies of devices, edge nodes and clouds on Ray."""
    if version:
        from testbed import __version__

        typer.echo(f"testbed {__version__}")
        raise typer.Exit(0)
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        err_console.print(f"[bold red]error[/]: --log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR")
        raise typer.Exit(2)
    logging.basicConfig(level=level)


def _emit_json(data: Any) -> None:
    """One JSON document on stdout, for scripts (strict JSON: NaN as null)."""
    from testbed.results import json_safe

    sys.stdout.write(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n")


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="topology, experiment or sweep YAML files")],
             as_json: Annotated[bool, typer.Option("--json", help="one JSON list of results on stdout")] = False
             ) -> None:
    """Check topology, experiment and sweep files (a sweep: every point it expands to)."""
    from testbed.config.loader import Experiment, load_any, read_yaml
    from testbed.sweep import is_sweep, validate_sweep

    rows: list[dict[str, Any]] = []
    code = 0
    for file in files:
        try:
            if is_sweep(read_yaml(file)):
                rows.append({"file": str(file), "ok": True, "kind": "sweep", "runs": validate_sweep(file)})
                continue
            obj = load_any(file)
        except TestbedError as exc:
            rows.append({"file": str(file), "ok": False, "error": str(exc), "error_type": type(exc).__name__})
            code = code or exc.exit_code
            continue
        topo = obj.topology if isinstance(obj, Experiment) else obj
        rows.append({"file": str(file), "ok": True, "kind": "experiment" if isinstance(obj, Experiment) else
                     "topology", "nodes": len(topo.nodes), "links": len(topo.links)})
    if as_json:
        _emit_json(rows)
    else:
        for r in rows:
            if not r["ok"]:
                err_console.print(f"[bold red]error[/] ({r['error_type']}): {r['error']}", highlight=False)
            elif r["kind"] == "sweep":
                console.print(f"[green]ok[/]: sweep {r['file']} — {r['runs']} runs", highlight=False)
            else:
                console.print(f"[green]ok[/]: {r['kind']} {r['file']} — {r['nodes']} nodes, {r['links']} links",
                              highlight=False)
    if code:
        raise typer.Exit(code)


@app.command()
def run(experiment: Annotated[Path, typer.Argument(help="experiment YAML")],
        address: Annotated[str | None, typer.Option(help="Ray cluster address (default: local Ray)")] = None,
        out: Annotated[Path, typer.Option(help="results root")] = Path("results"),
        no_fit: Annotated[bool, typer.Option("--no-fit", help="skip fitting cgroup quotas")] = False,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="dotted.path=value: change one value of the experiment (or, as topology.x, of its "
                          "topology) for this run; repeatable. The value is YAML: 5, 2.5, [edge, cloud]")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="the outcome as one JSON document on stdout")] = False,
        write_report: Annotated[bool, typer.Option("--report", help="write report.html when the run ends")] = False
        ) -> None:
    """Run an experiment and write its results directory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from testbed.config.loader import load_experiment, parse_override
    from testbed.runner import run_experiment

    logging.basicConfig(level=logging.WARNING)
    shown = err_console if as_json else console
    try:
        overrides = dict(parse_override(s) for s in set_ or [])
        exp = load_experiment(experiment, overrides=overrides)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=shown, transient=as_json) as prog:
            task = prog.add_task(f"{exp.spec.name}: starting", total=None)

            def progress(done: int, total: int, label: str) -> None:
                prog.update(task, completed=done, total=total, description=f"{exp.spec.name}: {label or 'running'}")

            outcome = run_experiment(exp, out, address, progress, fit_caps=not no_fit)
    except TestbedError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: torn down; the partial run is kept and marked")
        raise typer.Exit(130) from None
    import pandas as pd

    findings = pd.read_csv(outcome.path / "findings.csv") if (outcome.path / "findings.csv").exists() else None
    report_path = None
    if write_report:
        from testbed.report import render_report

        report_path = render_report(outcome.path)
    tm = outcome.manifest.get("time")
    if as_json:
        _emit_json({"run_dir": str(outcome.path), "run_id": outcome.run_id, "status": outcome.status,
                    "overrides": overrides, "warnings": outcome.warnings,
                    "summary": outcome.summary.to_dict(orient="records"),
                    "findings": findings.to_dict(orient="records") if findings is not None else [],
                    "time": tm, "report": str(report_path) if report_path else None})
        return
    for w in outcome.warnings:
        err_console.print(f"[yellow]warning[/]: {w}", highlight=False)
    if not outcome.summary.empty:
        console.print(table_from_frame(_short_summary(outcome.summary), title=f"{exp.spec.name} summary"))
    if findings is not None:
        for r in findings.itertuples():
            colour = {"held": "green", "did not hold": "red"}.get(str(r.result), "cyan")
            ev = f" [dim]({r.evidence})[/]" if isinstance(getattr(r, "evidence", None), str) and r.evidence else ""
            console.print(f"[{colour}]{r.result}[/]: {r.finding}{ev}", highlight=False)
    if tm:
        console.print(f"time dilation k = {tm['time_dilation']:g} ({tm['how']['mode']}, set by {tm['how']['binding']}"
                      "): "
                      f"times above are emulated; {tm.get('emulated_s', 0):.1f} s emulated took "
                      f"{tm.get('wall_s', 0):.1f} s of wall time", highlight=False)
    console.print(f"results: {outcome.path}", highlight=False)
    if report_path:
        console.print(f"report: {report_path}", highlight=False)
    else:
        console.print(f"next: testbed report {outcome.path}  (or, in Python: "
                      f"testbed.results.load({str(outcome.path)!r}))", highlight=False)


@app.command()
def sweep(sweep_file: Annotated[Path, typer.Argument(help="sweep YAML")],
          address: Annotated[str | None, typer.Option(help="Ray cluster address (default: local Ray)")] = None,
          out: Annotated[Path, typer.Option(help="results root (sweeps go to OUT/sweeps/NAME)")] = Path("results"),
          parallel: Annotated[int | None, typer.Option(help="points in flight at once (default: one per Ray node)")]
          = None) -> None:
    """Run an experiment over a grid of parameter values, each point a Ray task; finished points are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from testbed.sweep import run_sweep

    logging.basicConfig(level=logging.WARNING)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as prog:
            task = prog.add_task(f"sweep {sweep_file.stem}", total=None)

            def progress(done: int, total: int, label: str) -> None:
                prog.update(task, completed=done, total=total, description=f"sweep: {label}")

            table, root = run_sweep(sweep_file, out, address, parallel, progress)
    except TestbedError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished points are kept; run the sweep again to resume")
        raise typer.Exit(130) from None
    if not table.empty:
        cols = [c for c in table.columns if c not in ("run_dir", "error", "ray_node")][:12]
        console.print(table_from_frame(table[cols], title=f"sweep {root.name}"))
        failed = table[table.status != "complete"]
        for r in failed.itertuples():
            err_console.print(f"[red]{r.status}[/]: point {r.point}: {r.error}")
    console.print(f"table: {root / 'sweep.csv'}  plot: {root / 'sweep.png'}")
    if not table.empty and (table.status != "complete").any():
        raise typer.Exit(1)


def _short_summary(df: object) -> object:
    """The columns a person reads first; the full table is in summary.csv."""
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    names = {"device": "device", "phase": "phase", "target": "runs on", "requests": "n",
             "latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms", "compute_ms": "compute ms",
             "transfer_ms": "transfer ms", "bytes_per_request": "bytes/req", "energy_j_per_request": "J/req",
             "fastest": "fastest",
             # early exit
             "config": "config", "local_exits": "local", "edge_acc": "edge acc %", "cloud_acc": "cloud acc %",
             "overall_acc": "acc %", "overall_latency_ms": "latency ms", "bytes_up_to_cloud": "bytes up",
             # partition offloading
             "algorithm": "algorithm", "predicted_total_ms": "predicted ms", "measured_total_ms": "measured ms",
             "prediction_error_pct": "error %",
             # blockchain-incentivized offloading
             "p50_ms": "p50 ms", "overhead_p50_ms": "chain overhead ms", "tasks": "tasks", "paid": "paid",
             "refunded": "refunded", "bad_claims_slashed": "frauds slashed", "good_claims_slashed": "honest slashed",
             "attacks_rejected": "txs rejected"}
    cols = [c for c in names if c in df.columns]
    return df[cols].rename(columns=names) if cols else df


@app.command()
def doctor(require: Annotated[list[str] | None, typer.Option(
        "--require", help="exit 3 unless this capability is present (repeatable), e.g. --require mininet-wifi")] = None
           ) -> None:
    """Say which emulation backends this host supports, and why."""
    from testbed.doctor import choose_backends, probe

    caps = probe()
    t = Table(title="host capabilities")
    for col in ("capability", "ok", "detail"):
        t.add_column(col)
    for c in caps:
        t.add_row(c.name, "[green]yes[/]" if c.ok else "[red]no[/]", c.detail)
    console.print(t)
    links, compute, reasons = choose_backends("auto", "auto", caps)
    netem = next((c for c in caps if c.name == "tc-netem"), None)
    console.print(f"auto backends: links=[bold]{links}[/], compute=[bold]{compute}[/]")
    for r in reasons:
        console.print(f"  {r}")
    if links == "kernel" and netem is not None and not netem.ok:
        console.print("  delay/jitter/loss: applied in the transport's receive path (no netem in this kernel)")
    have = {c.name: c.ok for c in caps}
    missing = [r for r in require or [] if not have.get(r, False)]
    if missing:
        unknown = [r for r in missing if r not in have]
        err_console.print(f"[red]missing[/]: {', '.join(missing)}"
                          + (f" (known capabilities: {', '.join(have)})" if unknown else ""))
        raise typer.Exit(3)


@app.command()
def clean(run_id: Annotated[str | None, typer.Option("--run", help="only this run id")] = None,
          all_: Annotated[bool, typer.Option("--all", help="also live runs, and every object named tb-*")] = False
          ) -> None:
    """Remove namespaces, cgroups, routes and processes that killed runs left behind (idempotent)."""
    from testbed.lifecycle.cleanup import clean as do_clean

    rep = do_clean(run_id, include_live=all_, sweep=all_)
    for r in rep.removed:
        console.print(f"removed {r}")
    for s in rep.skipped_live_runs:
        console.print(f"[yellow]skipped[/] run {s}: its owner is still running (use --all)")
    for f in rep.failed:
        err_console.print(f"[red]failed[/] {f}")
    if not rep.removed and not rep.failed:
        console.print("nothing to clean")
    if rep.failed:
        raise typer.Exit(5)


@app.command()
def contracts() -> None:
    """Compile the chain's Vyper contracts into the cache (a run compiles on first use otherwise)."""
    import time as _t

    from testbed.chain import CONTRACTS, EVM_VERSION, cache_dir, compiled

    t = Table(title=f"contracts (EVM {EVM_VERSION}, cache {cache_dir()})")
    for col in ("contract", "bytecode bytes", "functions", "events", "seconds"):
        t.add_column(col)
    for f in sorted(CONTRACTS.glob("*.vy")):
        t0 = _t.monotonic()
        c = compiled(f.stem)
        kinds = [e.get("type") for e in c["abi"]]
        t.add_row(f.stem, str(len(c["bytecode"]) // 2 - 1), str(kinds.count("function")), str(kinds.count("event")),
                  f"{_t.monotonic() - t0:.2f}")
    console.print(t)


@app.command()
def schema(out: Annotated[Path | None, typer.Option(help="directory for the JSON Schema files")] = None) -> None:
    """Export JSON Schemas of topology and experiment files."""
    from testbed.config.models import Catalog, ExperimentSpec, TopologySpec

    schemas = {"topology": TopologySpec.model_json_schema(), "experiment": ExperimentSpec.model_json_schema(),
               "catalog": Catalog.model_json_schema()}
    if out is None:
        console.print_json(json.dumps(schemas))
        return
    out.mkdir(parents=True, exist_ok=True)
    for k, v in schemas.items():
        (out / f"{k}.schema.json").write_text(json.dumps(v, indent=2))
        console.print(f"wrote {out / (k + '.schema.json')}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory under results/")]) -> None:
    """Render report.html (summary table, latency CDF, per-hop breakdown, bytes per link)."""
    from testbed.report import render_report

    try:
        out = render_report(run_dir)
    except FileNotFoundError as exc:
        err_console.print(f"[bold red]error[/]: {exc}")
        raise typer.Exit(2) from None
    console.print(f"report: {out}")


@app.command()
def export(run_dir: Annotated[Path, typer.Argument(help="a run directory under results/")],
           fmt: Annotated[str, typer.Option("--format", help="perfetto: Chrome trace JSON (ui.perfetto.dev)")]
           = "perfetto",
           out: Annotated[Path | None, typer.Option(help="output file (default: RUN/trace.perfetto.json)")] = None
           ) -> None:
    """Write a run's spans as a trace: one track per node, flows linking each request's hops."""
    from testbed.export import export_run

    try:
        path = export_run(run_dir, fmt, out)
    except (FileNotFoundError, ValueError) as exc:
        err_console.print(f"[bold red]error[/]: {exc}")
        raise typer.Exit(2) from None
    console.print(f"trace: {path}  (open it at https://ui.perfetto.dev or chrome://tracing)", highlight=False)


@app.command()
def compare(run_dirs: Annotated[list[Path], typer.Argument(help="two or more run directories")],
            metric: Annotated[list[str] | None, typer.Option(help="summary column to compare (repeatable)")] = None,
            out: Annotated[Path | None, typer.Option(help="also write the table to this CSV file")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="both tables as one JSON document")] = False
            ) -> None:
    """Set runs side by side: their summaries joined on device, phase, ..., and what differs in their set-up."""
    from testbed.compare import compare as do_compare

    try:
        table, diff = do_compare(list(run_dirs), metric)
    except (FileNotFoundError, ValueError) as exc:
        err_console.print(f"[bold red]error[/]: {exc}")
        raise typer.Exit(2) from None
    if out is not None:
        table.to_csv(out, index=False)
    if as_json:
        _emit_json({"table": table.to_dict(orient="records"), "differences": diff.to_dict(orient="records")})
        return
    console.print(table_from_frame(table, title="runs side by side (ratio = second / first)"))
    if diff.empty:
        console.print("the runs' set-ups are the same")
    else:
        console.print(table_from_frame(diff.astype(str), title="what differs in their set-up"))


@app.command()
def calibrate(classes: Annotated[str, typer.Option(help="comma-separated hardware classes")] = "rpi4b",
              models: Annotated[str, typer.Option(help="comma-separated models")] = "resnet18,mobilenet_v2",
              refit: Annotated[bool, typer.Option("--refit", help="forget earlier fits on this host")] = False) -> None:
    """Measure this host, fit each class's caps, and print emulated vs published latency."""
    from testbed import bench as b
    from testbed.calibration import CalibrationStore, calibration_path

    logging.basicConfig(level=logging.WARNING)
    if refit:
        st = CalibrationStore.load()
        st.cgroup_cores.clear()
        st.dilation_slowdown.clear()
        st.fit_error_pct.clear()
        st.host_ms.clear()
        st.save()
    _, compute = b.available_backends()
    rows = []
    with console.status("calibrating ..."):
        for hc in classes.split(","):
            rows += b.bench_classes(compute, tuple(models.split(",")), hardware=hc.strip(), requests=20)
    _print_rows(rows)
    store = CalibrationStore.load()
    console.print(f"host one-thread latencies (ms): {json.dumps({k: round(v, 2) for k, v in store.host_ms.items()})}")
    console.print(f"saved: {calibration_path()}")


def _print_rows(rows: list[Any]) -> None:
    t = Table(title="measured vs target")
    for c in ("bench", "case", "measured", "target", "error", "tolerance", "ok"):
        t.add_column(c)
    for r in rows:
        t.add_row(r.bench, r.case, f"{r.measured:.3f} {r.unit}", f"{r.expected:.3f} {r.unit}",
                  f"{r.error:+.2f} {r.tolerance_unit}", f"{r.tolerance:g} {r.tolerance_unit}",
                  "[green]yes[/]" if r.ok else "[red]NO[/]")
    console.print(t)


@app.command()
def bench(which: Annotated[str, typer.Argument(
              help="suites: fidelity | seeds | scale | experiments | soak; single benchmarks: links | transport | "
                   "classes | demo | dilation | classes-all | fl-flower | chain | trace | all")] = "all",
          out: Annotated[Path, typer.Option(help="where to store the JSON record")] = Path("results/bench"),
          size: Annotated[str, typer.Option(help="suite size (fidelity, seeds): quick (under 10 min) or full")]
          = "quick",
          only: Annotated[str | None, typer.Option(help="seeds, experiments: only entries whose name contains this")]
          = None,
          url: Annotated[str | None, typer.Option(help="chain: also time a JSON-RPC node on this machine")] = None,
          quick: Annotated[bool, typer.Option("--quick", help="same as --size quick")] = False,
          full: Annotated[bool, typer.Option("--full", help="same as --size full")] = False,
          runs: Annotated[int, typer.Option(help="soak: how many killed runs", min=1, max=1000)] = 50,
          load: Annotated[bool, typer.Option("--load", help="run beside a CPU-burning competitor on every core "
                                                           "(the host made slower; killed when the bench ends)")]
          = False,
          ) -> None:
    """Measure the emulation against its targets and print measured beside target."""

    from testbed import bench as b

    if quick and full:
        err_console.print("[red]error[/]: --quick and --full together: choose one")
        raise typer.Exit(2)
    size = "quick" if quick else "full" if full else size

    logging.basicConfig(level=logging.WARNING)
    if load:
        from testbed.bench_time import competitor

        with competitor() as pids:
            console.print(f"CPU-burning competitor on every core: pids {', '.join(map(str, pids))}")
            _bench(which, out, size, only, url, b, runs)
        return
    _bench(which, out, size, only, url, b, runs)


def _bench(which: str, out: Path, size: str, only: str | None, url: str | None, b: Any, runs: int = 50) -> None:
    import datetime as dt

    from testbed import bench_time as bt

    if which == "seeds":
        _seeds(size, out, only)
        return
    if which == "experiments":
        _experiments(out, only)
        return
    if which == "soak":
        _soak(out, runs)
        return
    if which == "scale":
        import pandas as pd

        from testbed.suites import run_scale

        with console.status("scale: 10, 50 and 200 emulated devices ..."):
            srows, sdir = run_scale(out_root=out)
        console.print(table_from_frame(pd.DataFrame(srows), title="start-up time and memory"))
        console.print(f"plot: {sdir / 'scale.png'}")
        return
    links, compute = b.available_backends()
    jobs: dict[str, Callable[[], list[b.Row]]] = {
        "links": lambda: b.bench_links(links), "transport": lambda: sum((b.bench_transport(x) for x in links), []),
        "classes": lambda: b.bench_classes(compute), "demo": bt.bench_demo_host,
        "dilation": lambda: bt.bench_dilated_links(links[:2]) + bt.bench_dilation_compute(compute[-1]),
        "classes-all": lambda: bt.bench_classes_all(models=bt.FULL_MODELS if size == "full" else bt.QUICK_MODELS),
        "fl-flower": _fl_flower,
        "chain": lambda: _chain(links, url), "trace": lambda: b.bench_traces(links)}
    label = which
    if which == "fidelity":
        if size not in ("quick", "full"):
            err_console.print(f"[red]error[/]: --size {size!r}: use quick or full")
            raise typer.Exit(2)
        jobs = dict(b.fidelity(size, links, compute))  # the suite's own sizes of the same benchmarks
        names, label = list(jobs), f"fidelity-{size}"
    elif which == "all":
        names = [j for j in jobs if j not in ("fl-flower", "chain", "dilation", "classes-all")]
    elif which in jobs:
        names = [which]
    else:
        err_console.print(f"[red]error[/]: unknown benchmark {which!r}; choose one of: {', '.join(jobs)}, all")
        raise typer.Exit(2)
    rows: list[b.Row] = []
    try:
        for name in names:
            with console.status(f"bench {name} ..."):
                rows += jobs[name]()
    except TestbedError as exc:
        fail(exc)
    _print_rows(rows)
    out.mkdir(parents=True, exist_ok=True)
    f = out / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{label}.json"
    f.write_text(json.dumps(b.as_records(rows), indent=2))
    console.print(f"record: {f}  ({sum(r.ok for r in rows)}/{len(rows)} within tolerance)")


def _soak(out: Path, runs: int) -> None:
    """Runs SIGKILLed at random moments (build, mid-run, teardown; the runner alone or its group), each followed by
    ``testbed clean``: nothing of ours may be left (testbed/soak.py)."""
    from testbed.soak import run_soak

    try:
        with console.status(f"soak: {runs} killed runs ...") as st:
            def step(i: int, r: dict[str, Any]) -> None:
                state = "clean" if r["ok"] else f"LEFT {r['leftovers'][:2]}"
                st.update(f"soak: {i + 1}/{runs} ({r['phase']}, {r['kill']}: {state})")

            rows, d = run_soak(runs, out_root=out, progress=step)
    except TestbedError as exc:
        fail(exc)
    t = Table(title=f"soak: {runs} runs killed at random moments, then testbed clean")
    for c in ("phase", "kill", "runs", "killed at (s, median)", "processes seen (median)", "clean", "left behind"):
        t.add_column(c, overflow="fold")
    import statistics

    for phase in ("build", "mid-run", "teardown"):
        for kill in ("runner", "group"):
            sel = [r for r in rows if r["phase"] == phase and r["kill"] == kill]
            if not sel:
                continue
            left = sorted({x for r in sel for x in r["leftovers"]} | {"(phase not reached)" for r in sel
                                                                      if not r["reached"]})
            t.add_row(phase, kill, str(len(sel)), f"{statistics.median(r['killed_at_s'] or 0 for r in sel):.1f}",
                      f"{statistics.median(r.get('processes_seen', 0) for r in sel):g}",
                      f"{sum(r['ok'] for r in sel)}/{len(sel)}", "; ".join(left[:6]))
    console.print(t)
    ok = sum(r["ok"] for r in rows)
    console.print(f"measured: {ok}/{len(rows)} runs left nothing behind (target: {len(rows)}/{len(rows)}); "
                  f"record: {d / 'summary.json'}")
    if ok < len(rows):
        raise typer.Exit(1)


def _experiments(out: Path, only: str | None) -> None:
    """Every file under experiments/ at its reduced size (testbed/suites.py ``REDUCED``): which complete."""
    from testbed.suites import run_shipped

    with console.status("shipped experiments ...") as st:
        rows, d = run_shipped(out, only, progress=lambda name: st.update(f"experiments: {name}"))
    t = Table(title="every shipped experiment, reduced size")
    for c in ("experiment", "status", "wall s", "emulated s", "k", "error"):
        t.add_column(c, overflow="fold")
    colour = {"complete": "green", "skipped": "yellow"}

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    for r in rows:
        t.add_row(r["experiment"], f"[{colour.get(r['status'], 'red')}]{r['status']}[/]", num(r["wall_s"]),
                  num(r["emulated_s"]), "" if r["time_dilation"] is None else f"{r['time_dilation']:g}",
                  r["error"])
    console.print(t)
    done = sum(r["status"] == "complete" for r in rows)
    ran = sum(r["status"] != "skipped" for r in rows)
    console.print(f"{done}/{ran} complete ({len(rows) - ran} skipped); record: {d / 'summary.json'}")
    if done < ran:
        raise typer.Exit(1)


def _seeds(size: str, out: Path, only: str | None) -> None:
    from testbed.suites import run_suite

    if size not in ("quick", "full"):
        err_console.print(f"[red]error[/]: --size {size!r}: use quick or full")
        raise typer.Exit(2)
    with console.status("seeds suite ...") as st:
        rows, suite_dir = run_suite(size, out, only, progress=lambda name: st.update(f"seeds suite: {name}"))
    t = Table(title=f"seeds suite ({size})")
    for c in ("entry", "finding", "verdict", "evidence"):
        t.add_column(c, overflow="fold")
    colour = {"PASS": "green", "FAIL": "red", "ERROR": "red"}
    for r in rows:
        t.add_row(r["entry"], r["finding"], f"[{colour.get(r['verdict'], 'cyan')}]{r['verdict']}[/]", r["evidence"])
    console.print(t)
    console.print(f"report: {suite_dir / 'index.html'}  summary: {suite_dir / 'summary.json'}")


def _chain(links: list[str], url: str | None) -> list[Any]:
    from testbed.chain.bench import bench_chain

    return bench_chain(links, url=url)


def _fl_flower() -> list[Any]:
    from workloads.fl.bench import bench_fl_flower  # the CLI may reach into workloads; the core may not

    return bench_fl_flower()


def main() -> None:
    try:
        app()
    except TestbedError as exc:  # pragma: no cover - commands catch their own
        err_console.print(f"error: {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
