"""The chain: Vyper contracts on a real EVM, reached by nodes over the emulated links.

- ``compiled(name)``: a contract from ``testbed/chain/contracts`` compiled with Vyper, cached on disk by
  source hash and compiler version (``testbed chain compile`` fills the cache ahead of a run).
- ``EVMChain``: the chain itself, embedded (py-evm through eth-tester and web3.py) or any Ethereum
  JSON-RPC node by URL. It runs inside a ``ChainActor`` (actors/chain.py).
- ``ChainClient`` (testbed.chain.client): a node's wallet; it signs transactions with the node's own
  key (eth-account) and sends them as raw bytes to the node hosting the ``chain`` gateway role, over
  the node's emulated path, so confirmation latency includes the topology.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CONTRACTS = Path(__file__).with_name("contracts")
# Shanghai rather than Vyper's default (Cancun): the widest range of clients runs it (Ganache 7 stops at
# Shanghai), and the contracts need nothing newer.
EVM_VERSION = "shanghai"
# offload_market: a task not settled within this many blocks of its posting may be expired and its bounty refunded.
# Far past any run's length (a block per transaction under automine, a few per second with block_ms), so that a
# run never sees a live task expire; a test mines past it.
TASK_TIMEOUT_BLOCKS = 100_000


def check_chain_url(url: str | None) -> str | None:
    """A chain URL the sealed network allows: ``http(s)`` to loopback (``localhost`` or 127.0.0.0/8, ``::1``).

    The chain's client runs in the host namespace (the ``ChainActor``), where an emulated 198.18.0.0/15 address
    is not ours to reach (under the userspace link backend it would be routed off the machine), and no other
    address is on this machine. Raises ``ValueError`` with the reason."""
    if url is None:
        return url
    import ipaddress
    from urllib.parse import urlparse

    u = urlparse(url)
    if u.scheme not in ("http", "https"):
        raise ValueError(f"{url}: a chain URL is http:// or https:// to a JSON-RPC node on this machine")
    host = u.hostname or ""
    ok = host == "localhost"
    try:
        ok = ok or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not ok:
        raise ValueError(f"{url}: the testbed only talks to a chain on this machine's loopback (127.0.0.1, ::1 or "
                         "localhost); the chain client runs in the host namespace, where no other address is ours")
    return url


def cache_dir() -> Path:
    base = os.environ.get("TESTBED_CONTRACT_CACHE") or Path.home() / ".cache" / "testbed" / "contracts"
    return Path(base)


def compiled(name: str) -> dict[str, Any]:
    """ABI and bytecode of contract ``name`` (``contracts/<name>.vy``), compiled once per source and compiler."""
    import vyper

    src_file = CONTRACTS / f"{name}.vy"
    if not src_file.exists():
        known = sorted(p.stem for p in CONTRACTS.glob("*.vy"))
        raise KeyError(f"no contract {name!r}; known: {', '.join(known)}")
    src = src_file.read_text()
    digest = hashlib.sha256(f"{vyper.__version__}\n{EVM_VERSION}\n{src}".encode()).hexdigest()[:16]
    out = cache_dir() / f"{name}-{digest}.json"
    if out.exists():
        data: dict[str, Any] = json.loads(out.read_text())
        return data
    from vyper import compile_code
    from vyper.compiler.settings import Settings

    res = compile_code(src, output_formats=["abi", "bytecode"], settings=Settings(evm_version=EVM_VERSION))
    data = {"name": name, "abi": res["abi"], "bytecode": res["bytecode"], "vyper": vyper.__version__,
            "evm_version": EVM_VERSION}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(out)
    return data


def keccak(data: bytes) -> bytes:
    from eth_utils.crypto import keccak as _k

    out: bytes = _k(data)
    return out


def node_key(run_seed: int, node: str) -> bytes:
    """A node's private key, derived from the run's seed and its name (reproducible, never reused across seeds)."""
    return hashlib.sha256(f"testbed-chain-key/{run_seed}/{node}".encode()).digest()


def address_of(key: bytes) -> str:
    from eth_account import Account

    addr: str = Account.from_key(key).address
    return addr
