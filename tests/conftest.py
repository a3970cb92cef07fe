"""Shared fixtures: an isolated state dir, local Ray, and an autouse check that nothing of ours survives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from testbed.control import init_ray, worker_env

ROOT = Path(__file__).resolve().parents[1]


def is_root() -> bool:
    return os.geteuid() == 0


def leftovers() -> list[str]:
    """Kernel objects of ours that exist right now (namespaces, cgroups, host veths, blackhole route)."""
    from testbed.lifecycle.cleanup import present_objects

    return present_objects()


@pytest.fixture(autouse=True)
def leak_check(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs with its own ledger directory and must leave no kernel object of ours behind."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("TESTBED_STATE_DIR", str(state))
    before = set(leftovers())
    yield
    after = set(leftovers()) - before
    assert not after, f"the test left kernel objects behind: {sorted(after)}"


@pytest.fixture(scope="session")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calib") / "calibration.json"


@pytest.fixture(scope="session")
def _shared_ray(calibration_file: Path) -> Iterator[None]:
    """Shut the tests' shared local Ray down at the end of the session (``ray_local`` starts it on first use)."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_local(_shared_ray: None, calibration_file: Path) -> Iterator[None]:
    """A local Ray instance, shared by the tests that ask for one: started on first use (or after a test that
    needed a cluster of its own), left up for the next, shut down at the end of the session. Starting and stopping
    Ray costs 5-6 s of this 2-core machine's time per test; every Testbed still starts and kills its own actors,
    so no state of one run reaches the next. The calibration cache is session-wide, set before Ray starts (its
    workers inherit the environment)."""
    import ray

    os.environ["TESTBED_CALIBRATION"] = str(calibration_file)
    if not ray.is_initialized():
        init_ray(namespace="testbed-tests", num_cpus=2)
    yield


@contextmanager
def emulated_cluster(calibration_file: Path, monkeypatch: pytest.MonkeyPatch, head_resources: dict[str, float],
                     nodes: list[dict[str, float]]) -> Iterator[tuple[Any, list[str]]]:
    """A multi-node Ray cluster on this machine (ray.cluster_utils): a head with no CPUs, one node of one CPU
    per entry of ``nodes`` (its custom resources), the driver connected; shut down afterwards. Yields the
    cluster and the added nodes' ids, in the order of ``nodes``."""
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("TESTBED_CALIBRATION", str(calibration_file))
    if ray.is_initialized():  # the tests' shared local Ray: a cluster needs a driver of its own
        ray.shutdown()
    worker_env()  # the cluster's raylets start their workers at nice 0, as init_ray's do
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": head_resources})
    ids = [cluster.add_node(num_cpus=1, resources=res).node_id for res in nodes]
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    try:
        yield cluster, ids
    finally:
        ray.shutdown()
        cluster.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every root-only test carries ``@pytest.mark.privileged("what it needs root for")``; without root each is
    skipped with that reason (one mechanism, so ``-m privileged`` / ``-m "not privileged"`` select them all)."""
    if is_root():
        return
    for item in items:
        m = item.get_closest_marker("privileged")
        if m is not None:
            why = m.args[0] if m.args else "network namespaces, tc, cgroups"
            item.add_marker(pytest.mark.skip(reason=f"needs root ({why})"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained-model cache for the session: a model trained by one test is loaded by the next."""
    return tmp_path_factory.mktemp("models")
