"""Edge-AI emulation testbed: Ray actors emulate IoT devices, edge nodes and clouds, linked by shaped networks and
capped to published hardware classes, running real PyTorch work.

Three planes (see ../docs/design-notes.md). The **control plane** is Ray: ``testbed.testbed.Testbed`` places one
actor per node (``actors/``), starts, crashes and restarts them, and ``testbed.runner`` drives a workload through
them and writes a run directory; ``testbed.sweep`` spreads runs over a cluster. The **data plane** is the
testbed's own transport (``testbed.transport``): sockets between the nodes' endpoints, each bound to its node's
address, with ``testbed.node.NodeRuntime`` as what a workload's role sees of its node. The **emulation plane** is
a set of backends: links in ``testbed.emulation.network`` (userspace shaping, or namespaces and tc qdiscs with
``testbed.emulation.tc``/``netns``, or Mininet-WiFi), compute caps in ``testbed.emulation.cgroups`` and the
time-dilation factor of ``testbed.dilation``/``testbed.clock``, which makes every class run at its published
speed on any host.

The names here are the documented way in::

    import testbed
    exp = testbed.load_experiment("experiments/demo.yaml", overrides={"workload.params.requests_per_device": 5})
    out = testbed.run_experiment(exp, "results")
    run = testbed.load(out.path)          # manifest, spans, resources and summary as pandas
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("edge-testbed")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

# name -> module: imported on first use, so that ``import testbed`` (and the CLI's start) stays light
_EXPORTS = {
    "Experiment": "testbed.config.loader",
    "load_experiment": "testbed.config.loader",
    "experiment_from_dict": "testbed.config.loader",
    "load_topology": "testbed.config.loader",
    "topology_from_dict": "testbed.config.loader",
    "run_experiment": "testbed.runner",
    "RunOutcome": "testbed.runner",
    "load": "testbed.results",
    "RunResults": "testbed.results",
    "expand_attrs": "testbed.results",
    "render_report": "testbed.report",
    "run_sweep": "testbed.sweep",
    "TestbedError": "testbed.errors",
    "ConfigError": "testbed.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'testbed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
