"""The ``Workload`` extension point and its registry.

A workload is driver-side logic (``setup`` → ``step``… → ``teardown``, the loop owned by
``testbed.runner``) plus node-side *roles* hosted by ``NodeActor``s. Both register by name:
``WORKLOADS`` and ``ROLES``. Built-ins live in the ``workloads`` package and load through the
``testbed.workloads`` / ``testbed.roles`` entry points, so the core never imports them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from testbed import clock
from testbed.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from testbed.testbed import Testbed
    from testbed.topology import Topology


def require_tiers(topology: Topology, source: str, what: str, tiers: tuple[str, ...] = ("device", "edge", "cloud"),
                  ) -> None:
    """Raise ``ConfigError`` unless ``topology`` has a node of every tier in ``tiers`` (for ``Workload.check``)."""
    from testbed.config.models import Tier
    from testbed.errors import ConfigError

    for t in tiers:
        if not topology.by_tier(Tier(t)):
            raise ConfigError(f"{what} needs at least one {t} node", file=source, path="topology.nodes",
                              fix=f"add a node with tier: {t}")


OnFailure = Literal["fail", "record", "local"]


@dataclass(frozen=True)
class FailurePolicy:
    """What a device does when the next tier does not answer (a workload's ``on_failure``): ``fail`` the run,
    ``record`` the request as failed and go on, or finish it ``local``ly. A device that has left (churn) does
    neither fail the run nor compute for a request it dropped."""

    mode: str = "fail"

    @property
    def timeout_s(self) -> float:
        # emulated seconds: a failure that is handled need not wait two minutes
        return 120.0 if self.mode == "fail" else 30.0

    def handle(self, rt: Any, exc: Exception, t0: int, rid: int, target: str) -> str:
        """Record the failed request and return its status: ``fallback`` (the caller computes it on the device)
        or ``failed``. Raises ``exc`` under ``fail``."""
        if self.mode == "fail" and not rt.away:
            raise exc
        rt.span("request_failed", t0, clock.now_ns(), request_id=rid, target=target,
                error=f"{type(exc).__name__}: {exc}")
        return "fallback" if self.mode == "local" and not rt.away else "failed"


@dataclass
class StepResult:
    """What one step did: how many units of progress, and whether the workload is finished."""

    progress: int = 1
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Workload(ABC):
    """Driver-side workload logic. Subclasses set ``Params`` (a frozen pydantic model)."""

    Params: ClassVar[type[BaseModel]]

    def __init__(self, params: BaseModel, requests: int | None, seed: int, duration_s: float | None = None) -> None:
        self.params = params
        self.requests = requests
        self.seed = seed
        self.duration_s = duration_s

    @classmethod
    def check(cls, params: BaseModel, topology: Topology, source: str) -> None:  # noqa: B027
        """Semantic checks against the topology at load time; raise ``ConfigError``."""

    def node_models(self, topology: Topology) -> dict[str, str | None]:
        """Which model each node will run: caps are calibrated per (hardware class, model)."""
        return {}

    @abstractmethod
    def setup(self, tb: Testbed) -> None:
        """Place roles on nodes and load models."""

    @abstractmethod
    def total_steps(self) -> int:
        """Steps ``step`` will take (for the progress bar)."""

    @abstractmethod
    def step(self, tb: Testbed) -> StepResult:
        """Advance the workload by one step."""

    def teardown(self, tb: Testbed) -> None:  # noqa: B027
        """Release what ``setup`` acquired (actors are torn down by the testbed)."""

    @classmethod
    def figures(cls, run: Any) -> list[tuple[str, Any]]:
        """Workload-specific matplotlib figures for ``testbed report`` (``run`` is a loaded RunResults)."""
        return []

    def artifacts(self) -> dict[str, pd.DataFrame]:
        """Extra tables for the run directory (e.g. profiles, plans), written as ``<name>.parquet``."""
        return {}

    def findings(self, summary: pd.DataFrame) -> pd.DataFrame:
        """The seed's claims checked on this run's summary: one row each with ``finding`` and ``result``
        ("held", "did not hold", ...), written to ``findings.csv`` and shown by the CLI and the report."""
        import pandas as pd

        return pd.DataFrame()

    def summarize(self, spans: pd.DataFrame) -> pd.DataFrame:
        """A summary table from the run's spans."""
        import pandas as pd

        return pd.DataFrame()


WORKLOADS: Registry[type[Workload]] = Registry("workload")
ROLES: Registry[type[Any]] = Registry("role")
ACTORS: Registry[Any] = Registry("actor")  # Ray actor classes ("node", "compute"), from the actors package


@dataclass(frozen=True)
class ModelDef:
    """A model builder registered by name (architectures from torchvision or our own code).

    ``build(num_classes, seed)`` returns an ``nn.Module`` with random (seeded) weights, or with
    weights from ``weights_path`` when given; nothing is downloaded.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    build: Any  # Callable[[int, int, str | None], torch.nn.Module]


MODELS: Registry[ModelDef] = Registry("model")
