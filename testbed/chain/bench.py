"""``testbed bench chain``: what a transaction costs on the embedded EVM, and that a node's confirmation
latency is the chain's own time plus its emulated path (and, with a block interval, half an interval)."""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time

from testbed.bench import Row, link, pair_topology

ETH = 10**18
HOST_FACTS_TX_MS = 27.0  # ../shared/reference/host-facts.md: "about 27 ms per transaction on the embedded py-evm chain"


def _compile_s() -> float:
    import os

    from testbed.chain import CONTRACTS, compiled

    old = os.environ.get("TESTBED_CONTRACT_CACHE")
    with tempfile.TemporaryDirectory() as d:
        os.environ["TESTBED_CONTRACT_CACHE"] = d
        try:
            t0 = time.monotonic()
            for f in sorted(CONTRACTS.glob("*.vy")):
                compiled(f.stem)
            return time.monotonic() - t0
        finally:
            if old is None:
                os.environ.pop("TESTBED_CONTRACT_CACHE", None)
            else:
                os.environ["TESTBED_CONTRACT_CACHE"] = old


def _local_tx_ms(n: int, url: str | None) -> list[float]:
    from testbed.chain import TASK_TIMEOUT_BLOCKS, keccak, node_key
    from testbed.chain.client import ChainClient, direct
    from testbed.chain.evm import EVMChain

    chain = EVMChain(url)
    try:
        addr = chain.deploy("offload_market", [ETH, ETH // 2, 1, 0, TASK_TIMEOUT_BLOCKS])
        from testbed.chain import compiled

        c = ChainClient(node_key(0, "bench"), addr, compiled("offload_market")["abi"], chain.info()["chain_id"],
                        direct(chain))
        chain.fund([c.address], 2 * ETH)
        c.transact("register", False, value=ETH)
        out = []
        for i in range(n):
            t0 = time.monotonic_ns()
            c.transact("require_task", keccak(f"b/{i}".encode()), keccak(b"b"), value=1)
            out.append((time.monotonic_ns() - t0) / 1e6)
        return out
    finally:
        chain.close()


def _path_tx_ms(backend: str, delay_ms: float, n: int, block_ms: float | None) -> list[float]:
    import ray

    from testbed.chain import TASK_TIMEOUT_BLOCKS
    from testbed.testbed import Testbed

    topo = pair_topology(link(50, delay_ms))
    run_seed = 0
    with Testbed(topo, secrets.token_hex(4), run_seed, backend, "none", {"a": None, "b": None}) as tb:
        chain = tb.start_chain("b", None, block_ms)
        addr = ray.get(chain.deploy.remote("offload_market", [ETH, ETH // 2, 1, 0, TASK_TIMEOUT_BLOCKS]))
        from testbed.chain import address_of, node_key

        ray.get(chain.fund.remote([address_of(node_key(run_seed, "a"))], 2 * ETH))
        tb.add_role("a", "chain_probe", {"seed": run_seed, "contract": addr, "contract_name": "offload_market",
                                         "chain_id": ray.get(chain.info.remote())["chain_id"], "gateway": "b",
                                         "deposit_wei": ETH})
        out: list[float] = tb.call("a", "chain_probe", "run", n=n, spread_ms=block_ms or 0.0, timeout=600)
        return out


def bench_chain(links: list[str], n: int = 40, url: str | None = None) -> list[Row]:
    rows: list[Row] = []
    cs = _compile_s()
    rows.append(Row("chain", "compile both Vyper contracts (uncached)", cs, 2.0, "s", max(0.0, cs - 2.0), 0.0,
                    "s over 2"))
    local = statistics.median(_local_tx_ms(n, None))
    rows.append(Row("chain", "embedded py-evm: one transaction signed, executed, mined (median)", local,
                    HOST_FACTS_TX_MS, "ms", 100 * (local / HOST_FACTS_TX_MS - 1), 100.0, "% (host-facts figure)"))
    if url:
        rpc = statistics.median(_local_tx_ms(n, url))
        rows.append(Row("chain", f"JSON-RPC node {url}: one transaction (median)", rpc, local, "ms",
                        100 * (rpc / local - 1), 1e9, "% (vs embedded; no target)"))
    backend = links[0]
    delay = 31.0  # the WAN class's one-way delay
    over = _path_tx_ms(backend, delay, n, None)
    med = statistics.median(over)
    # the transaction and its receipt each cross the path once; the rest is the chain's own time
    exp = local + 2 * delay
    rows.append(Row("chain", f"{backend}: confirmation over a {delay:.0f} ms one-way path (median)", med, exp, "ms",
                    100 * (med / exp - 1), 10.0, "%"))
    block = 200.0
    waited = _path_tx_ms(backend, delay, n, block)
    mean = statistics.fmean(waited)
    exp_b = local + 2 * delay + block / 2
    rows.append(Row("chain", f"{backend}: confirmation with a block every {block:.0f} ms (mean)", mean, exp_b, "ms",
                    100 * (mean / exp_b - 1), 15.0, "%"))
    return rows

