"""``testbed report RUN_DIR``: one HTML page with the summary table and matplotlib plots."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.results import hop_breakdown, link_bytes, load, request_table


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _plots(spans: pd.DataFrame, resources: pd.DataFrame, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    rt = request_table(spans)
    if not rt.empty:
        fig, ax = plt.subplots(figsize=(7, 4))
        for (dev, phase), g in rt.groupby(["device", "phase"]):
            v = g.latency_ms.sort_values().to_numpy()
            ax.step(v, [(i + 1) / len(v) for i in range(len(v))], where="post", label=f"{dev} → {phase}")
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("CDF")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        out.append(("Latency CDF per device and tier", _png(fig)))

        br = hop_breakdown(spans)
        fig, ax = plt.subplots(figsize=(8, 4))
        br.plot.bar(stacked=True, ax=ax)
        ax.set_ylabel("mean time per request (ms)")
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        out.append(("Per-hop latency breakdown (uplink and downlink include the emulated link delay; queue = "
                    "waiting for a node's message handler or its compute process, behind other requests; "
                    "other = the rest: replies returning through actor calls, serialisation)", _png(fig)))

        wf = waterfall_figure(spans)
        if wf is not None:
            out.append(("Where each millisecond went: a sample of requests (per phase the fastest, the median and "
                        "the slowest), each span at its time since the request started; gaps are actor calls and "
                        "serialisation", _png(wf)))

    lb = link_bytes(spans, manifest.get("path_links", {}))
    if not lb.empty:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(lb) + 1.5))
        ax.barh(lb.link, lb.bytes / 1e6)
        ax.set_xlabel("MB carried (transfer spans, per link and direction)")
        out.append(("Bytes per link", _png(fig)))

    sc = spans[spans.kind == "scenario"] if "kind" in spans else spans.iloc[0:0]
    if not sc.empty:
        out.append(("Scenario: link rates over time, and request latency against the same clock",
                    _png(scenario_figure(spans))))

    if not resources.empty:
        comp = resources[resources.process == "compute"]
        if not comp.empty:
            fig, ax = plt.subplots(figsize=(7, 3.5))
            t0 = comp.t_ns.min()
            for node, g in comp.groupby("node"):
                ax.plot((g.t_ns - t0) / 1e9, g.cpu_pct, label=node)
            ax.set_xlabel("time (s)")
            ax.set_ylabel("compute process CPU %")
            ax.legend(fontsize=7)
            out.append(("CPU use of each node's compute process (psutil)", _png(fig)))
    return out


WATERFALL_COLOURS = {"transfer": "tab:blue", "queue": "tab:red", "compute": "tab:green"}


def waterfall_sample(spans: pd.DataFrame) -> pd.DataFrame:
    """The requests a waterfall shows: per phase, the fastest, the median and the slowest (rows of the request
    spans, by phase then latency)."""
    req = spans[(spans.kind == "request") & (spans.request_id >= 0)]
    picks = []
    for _, g in req.sort_values("duration_ms", kind="stable").groupby("phase", sort=False):
        picks += sorted({g.index[0], g.index[len(g) // 2], g.index[-1]}, key=lambda i: g.duration_ms[i])
    return req.loc[picks]


def waterfall_figure(spans: pd.DataFrame) -> Any:
    """One row per sampled request; its transfer, queue and compute spans as bars from the request's start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample = waterfall_sample(spans)
    if sample.empty:
        return None
    parts = spans[spans.kind.isin(list(WATERFALL_COLOURS)) & (spans.request_id >= 0)]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(sample) + 1.5))
    seen: set[str] = set()  # one legend entry per kind
    for y, r in enumerate(sample.itertuples()):
        mine = parts[(parts.request_id == r.request_id) & (parts.phase == r.phase)]
        ax.barh(y, r.duration_ms, left=0, color="none", edgecolor="black", linewidth=0.6)
        for kind, g in mine.groupby("kind"):
            ax.barh([y] * len(g), g.duration_ms, left=(g.start_ns - r.start_ns) / 1e6, height=0.6,
                    color=WATERFALL_COLOURS[str(kind)], label=None if kind in seen else str(kind))
            seen.add(str(kind))
        ax.text(r.duration_ms, y, f" {r.duration_ms:.1f} ms", va="center", fontsize=6)
    ax.set_yticks(range(len(sample)), [f"{r.node} → {r.phase} #{r.request_id}" for r in sample.itertuples()],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the request started (emulated)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0))
    ax.grid(alpha=0.3, axis="x")
    return fig


def _topology_tables(run_dir: Path) -> str:
    """The nodes (tier, class, address) and links (rates, delays, loss per direction) the run resolved."""
    f = run_dir / "topology.resolved.json"
    if not f.exists():
        return ""
    t = json.loads(f.read_text())
    nodes = pd.DataFrame([{"node": n, **v} for n, v in t.get("nodes", {}).items()])
    rows = []
    for lk in t.get("links", []):
        row = {"link": f"{lk['a']}--{lk['b']}", "class": lk.get("link_class") or ""}
        for d in ("up", "down"):
            sp = lk.get(d) or {}
            row[f"{d} Mbit/s"] = sp.get("rate_mbit")
            row[f"{d} delay ms"] = sp.get("delay_ms")
            row[f"{d} loss %"] = sp.get("loss_pct")
        rows.append(row)
    out = "<h2>Topology</h2>" + (nodes.to_html(index=False) if not nodes.empty else "")
    if rows:
        out += "<h3>Links (up = from the first end)</h3>" + pd.DataFrame(rows).to_html(
            index=False, float_format=lambda v: f"{v:g}", na_rep="")
    return out


def scenario_figure(spans: pd.DataFrame) -> Any:
    """Each changed link's rate (and loss) over time, above every request's latency, from the scenario's start."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = spans[spans.kind == "scenario"].sort_values("start_ns")
    t0 = sc.start_ns.min()
    req = spans[spans.kind == "request"]
    fig, ax = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    rows = [dict(json.loads(a), t=(s - t0) / 1e9, name=f"{src}-{dst}" if src else node)
            for a, s, src, dst, node in zip(sc["attrs_json"], sc.start_ns, sc.src, sc.dst, sc.node, strict=True)]
    for name in dict.fromkeys(r["name"] for r in rows):
        pts = [r for r in rows if r["name"] == name and "up_rate_mbit" in r]
        if pts:
            ax[0].step([p["t"] for p in pts], [p["up_rate_mbit"] for p in pts], where="post", label=f"{name} up")
        for r in rows:
            if r["name"] == name and r["event"] == "down":
                ax[0].axvspan(r["t"], next((q["t"] for q in rows if q["name"] == name and q["event"] == "up"
                                             and q["t"] >= r["t"]), r["t"]), color="red", alpha=0.2)
    ax[0].set_ylabel("rate (Mbit/s)")
    if ax[0].get_legend_handles_labels()[0]:
        ax[0].set_yscale("log")
        ax[0].legend(fontsize=7)
    ax[0].grid(alpha=0.3)
    # node outages: from a crash to its restart, and churn: from a leave to its join (or the end)
    for start_ev, end_ev, color in (("crash", "restart", "grey"), ("leave", "join", "orange")):
        for r in rows:
            if r["event"] != start_ev:
                continue
            back = next((q["t"] for q in rows if q["event"] == end_ev and q["t"] >= r["t"]
                         and q["name"] == r["name"]), None)
            end = back if back is not None else float((req.end_ns.max() - t0) / 1e9) if not req.empty else r["t"]
            for a in ax:
                a.axvspan(r["t"], end, color=color, alpha=0.2)
            ax[1].text(r["t"], 1.0, f" {r['name']} {start_ev}", transform=ax[1].get_xaxis_transform(), fontsize=6,
                       va="top", color=color)
    # one colour per phase, or per device when there is one phase and several devices (churn, crashes)
    by = "node" if req.phase.nunique() <= 1 and req.node.nunique() > 1 else "phase"
    for key, g in req.groupby(by):
        ax[1].scatter((g.start_ns - t0) / 1e9, g.duration_ms, s=8, label=str(key))
    ax[1].set_xlabel("time since the scenario started (s)")
    ax[1].set_ylabel("request latency (ms)")
    ax[1].set_yscale("log")
    ax[1].grid(alpha=0.3)
    if req[by].nunique() <= 12:
        ax[1].legend(fontsize=6)
    return fig


def render_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into the run directory and return its path.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` is not a run directory.
    """
    r = load(run_dir)
    m = r.manifest
    parts = [f"<h1>Run {html.escape(m.get('experiment', ''))} / {html.escape(m.get('run_id', ''))}</h1>",
             f"<p>status: <b>{html.escape(str(m.get('status')))}</b>"
             + (" (partial)" if m.get("partial") else "")
             + f"; backends: {html.escape(json.dumps(m.get('backends', {}).get('links')))} links, "
             f"{html.escape(json.dumps(m.get('backends', {}).get('compute')))} compute; seed {m.get('seed')}; "
             f"git {html.escape(str(m.get('git', {}).get('revision')))}</p>"]
    tm = m.get("time")
    if tm:
        how = tm.get("how", {})
        approx = ", ".join(how.get("approximated") or [])
        parts.append(f"<p>Times are emulated. Time dilation k = {tm.get('time_dilation'):g} "
                     f"({html.escape(str(how.get('mode')))}, set by {html.escape(str(how.get('binding')))}): "
                     f"{tm.get('emulated_s', float('nan')):.1f} s emulated took "
                     f"{tm.get('wall_s', float('nan')):.1f} s of wall time."
                     + (f" Approximated (class not reached): {html.escape(approx)}." if approx else "") + "</p>")
    parts.append(_topology_tables(r.path))
    if m.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in m["warnings"]) + "</ul>")
    if (r.path / "findings.csv").exists():
        parts.append("<h2>Findings of the seed, checked on this run</h2>"
                     + pd.read_csv(r.path / "findings.csv").to_html(index=False))
    if not r.summary.empty:
        parts.append("<h2>Summary</h2>" + r.summary.to_html(index=False, float_format=lambda v: f"{v:.2f}"))
    if not r.resources.empty and "nr_throttled" in r.resources:
        thr = r.resources[r.resources.process == "compute"].groupby("node").agg(
            cpu_pct_max=("cpu_pct", "max"), rss_max_mib=("rss_bytes", lambda s: s.max() / 2**20),
            nr_throttled=("nr_throttled", "max"), throttled_ms=("throttled_ms", "max"))
        parts.append("<h2>Caps: did a node hit its cap?</h2>" + thr.reset_index().to_html(
            index=False, float_format=lambda v: f"{v:.1f}"))
    plans = m.get("compute_plans", {})
    if plans:
        pdf = pd.DataFrame(plans.values())[["node", "hardware_class", "model", "backend", "target_ms", "slowdown",
                                            "cpu_cores", "host_speed", "basis"]]
        parts.append("<h2>Compute caps</h2>" + pdf.to_html(index=False, float_format=lambda v: f"{v:.3f}"))
    figures = _plots(r.spans, r.resources, m)
    try:
        from testbed.workload import WORKLOADS

        figures += [(t, _png(f)) for t, f in WORKLOADS.get(m["config"]["workload"]["name"]).figures(r)]
    except (KeyError, LookupError):
        pass  # an older manifest, or a workload no longer installed
    for title, img in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>{img}")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>testbed report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>" + "\n".join(parts) + "</body></html>")
    out = Path(run_dir) / "report.html"
    out.write_text(page)
    return out
