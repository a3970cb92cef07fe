"""``ChainActor``: the run's EVM chain (``testbed.chain.evm.EVMChain``) in a Ray actor of its own.

It holds no socket of the data plane: nodes reach it only through the node hosting the ``chain``
gateway role, over their emulated paths.
"""

from __future__ import annotations

import ray

from testbed.chain.evm import EVMChain

ChainActor = ray.remote(num_cpus=0, max_concurrency=32)(EVMChain)  # type: ignore[call-overload]
