"""Starting or joining Ray, the control plane, the same way everywhere.

Ray starts its worker processes at nice 15 (its ``worker_niceness``), so that its own daemons stay responsive
while workers compute. In a testbed the workers *are* the emulated nodes: at nice 15 beside any competitor at
nice 0 a worker gets about 3 % of a core (CFS weights 36 against 1024), so a model load that takes 0.4 s alone
took over 300 s beside two busy loops, and every emulated figure would follow the host's other load. Workers
started here run at nice 0, as the nodes' compute caps and the time-dilation factor assume.

A cluster started with ``ray start`` takes the same setting from its environment:
``RAY_worker_niceness=0 ray start ...``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

WORKER_NICENESS = 0


def worker_env() -> None:
    """Set the environment that Ray processes started from this one inherit (raylets read ``RAY_<config>``)."""
    os.environ["RAY_worker_niceness"] = str(WORKER_NICENESS)


def init_ray(address: str | None = None, namespace: str = "testbed", **kwargs: Any) -> None:
    """``ray.init`` with the testbed's settings: quiet, no dashboard, workers at nice 0 when Ray starts here."""
    import ray

    worker_env()
    opts: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False,
                            "configure_logging": False, "namespace": namespace}
    opts.update(kwargs)
    ray.init(address=address, **opts)
