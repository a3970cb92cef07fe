"""``ChainActor``: the run's EVM chain (``testbed.chain.evm.EVMChain``) in a Ray actor of its own.

It holds no socket of the data plane: nodes reach it only through the node hosting the ``chain``
gateway role, over their emulated paths.
"""

from __future__ import annotations

import ray

from testbed import clock
from testbed.chain.evm import EVMChain


class EVMChainActor(EVMChain):
    """``EVMChain`` in its own process: it first takes the run's time dilation, since the block interval
    (``block_ms``) and the receipt timeout are emulated time."""

    def __init__(self, url: str | None = None, block_ms: float | None = None, timeout_s: float = 60.0, *,
                 time_dilation: float = 1.0) -> None:
        clock.configure(time_dilation)
        super().__init__(url, block_ms, timeout_s)


ChainActor = ray.remote(num_cpus=0, max_concurrency=32)(EVMChainActor)  # type: ignore[call-overload]
