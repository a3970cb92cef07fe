"""``ChainClient``: a node's wallet. It builds and signs transactions locally (eth-account) and hands
the raw bytes to a carrier: over the emulated links to the node hosting the ``chain`` gateway role
(``over_links``), or straight to a ``EVMChain`` (``direct``, for tests and driver-side set-up).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from testbed import clock

# carrier(kind, payload, meta) -> (payload, meta); kinds: chain_tx, chain_call, chain_nonce, chain_logs
Carrier = Callable[[str, bytes | None, dict[str, Any]], tuple[bytes | None, dict[str, Any]]]


def direct(ledger: Any) -> Carrier:
    """A carrier that calls a ``EVMChain`` (or a Ray handle to a ``ChainActor``) without any network."""
    import ray

    def go(fn: str, *a: Any) -> Any:
        m = getattr(ledger, fn)
        return ray.get(m.remote(*a)) if hasattr(m, "remote") else m(*a)

    def carry(kind: str, payload: bytes | None, meta: dict[str, Any]) -> tuple[bytes | None, dict[str, Any]]:
        return serve(go, kind, payload, meta)

    return carry


def serve(go: Callable[..., Any], kind: str, payload: bytes | None,
          meta: dict[str, Any]) -> tuple[bytes | None, dict[str, Any]]:
    """The gateway's side of one chain message (``go(method, *args)`` reaches the ledger)."""
    if kind == "chain_tx":
        assert payload is not None
        return None, go("submit", payload)
    if kind == "chain_call":
        assert payload is not None
        return go("call", meta["to"], payload), {}
    if kind == "chain_nonce":
        return None, {"nonce": go("nonce", meta["address"])}
    if kind == "chain_logs":
        return None, {"events": go("events", meta["to"], int(meta.get("from_block", 0)))}
    raise ValueError(f"unknown chain message {kind!r}")


def over_links(rt: Any, gateway: str) -> Carrier:
    """A carrier that sends chain messages from node runtime ``rt`` to ``gateway`` over the emulated path."""

    def carry(kind: str, payload: bytes | None, meta: dict[str, Any]) -> tuple[bytes | None, dict[str, Any]]:
        arr = np.frombuffer(payload, np.uint8) if payload is not None else None
        reply = rt.request(gateway, kind, arr, dict(meta, role="chain"), int(meta.get("request_id", -1)))
        out = reply.array.tobytes() if reply.array is not None else None
        return out, dict(reply.meta)

    return carry


class Rejected(Exception):
    """A transaction the contract reverted or the chain refused; ``receipt`` says which and why."""

    def __init__(self, fn: str, receipt: dict[str, Any]) -> None:
        self.fn = fn
        self.receipt = receipt
        super().__init__(f"{fn}: {receipt.get('reason')}")


class ChainClient:
    """Signs and sends transactions to one contract for one account, in nonce order."""

    def __init__(self, key: bytes, contract: str, abi: list[dict[str, Any]], chain_id: int, carrier: Carrier,
                 on_span: Callable[..., None] | None = None, gas: int = 3_000_000,
                 max_fee_wei: int = 10**10, tip_wei: int = 10**9) -> None:
        from eth_account import Account
        from web3 import Web3

        self.account = Account.from_key(key)
        self.address: str = self.account.address
        self.contract_address = Web3.to_checksum_address(contract)
        self.contract = Web3().eth.contract(address=self.contract_address, abi=abi)
        self.chain_id = chain_id
        self.carrier = carrier
        self.on_span = on_span
        self.gas, self.max_fee, self.tip = gas, max_fee_wei, tip_wei
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self.gas_spent_wei = 0

    def sign(self, fn: str, args: list[Any], value: int = 0, nonce: int | None = None) -> bytes:
        """The raw signed transaction calling ``fn(*args)`` with ``value`` wei."""
        data = self.contract.encode_abi(fn, args)
        tx = {"to": self.contract_address, "data": data, "value": value, "gas": self.gas,
              "maxFeePerGas": self.max_fee, "maxPriorityFeePerGas": self.tip, "chainId": self.chain_id,
              "type": 2, "nonce": self._next_nonce() if nonce is None else nonce}
        raw: bytes = bytes(self.account.sign_transaction(tx).raw_transaction)
        return raw

    def _next_nonce(self) -> int:
        if self._nonce is None:
            _, meta = self.carrier("chain_nonce", None, {"address": self.address})
            self._nonce = int(meta["nonce"])
        n = self._nonce
        self._nonce += 1
        return n

    def send_raw(self, raw: bytes, fn: str = "raw", request_id: int = -1) -> dict[str, Any]:
        """Send already-signed bytes; returns the receipt (``status`` 1, 0 or -1)."""
        t0 = clock.now_ns()
        _, rc = self.carrier("chain_tx", raw, {"request_id": request_id, "fn": fn})
        t1 = clock.now_ns()
        self.gas_spent_wei += int(rc.get("gas_used", 0)) * int(rc.get("gas_price", 0))
        if self.on_span is not None:
            self.on_span("chain_tx", t0, t1, request_id=request_id, fn=fn, status=int(rc["status"]),
                         gas_used=int(rc.get("gas_used", 0)), block=rc.get("block"), reason=rc.get("reason"),
                         chain_ms=rc.get("chain_ms"), nbytes=len(raw))
        return rc

    def transact(self, fn: str, *args: Any, value: int = 0, request_id: int = -1,
                 check: bool = True) -> dict[str, Any]:
        """Call ``fn`` in a transaction and wait until it is mined; raises ``Rejected`` on a revert
        (the nonce is spent: the chain recorded the failed transaction) unless ``check`` is false."""
        with self._lock:
            raw = self.sign(fn, list(args), value)
            rc = self.send_raw(raw, fn, request_id)
            if rc["status"] == -1:
                self._nonce = None  # refused before execution: ask the chain again next time
        if check and rc["status"] != 1:
            raise Rejected(fn, rc)
        return rc

    def logs(self, from_block: int = 0, request_id: int = -1) -> list[dict[str, Any]]:
        """The contract's decoded events since ``from_block`` (a node watching the chain polls this)."""
        _, meta = self.carrier("chain_logs", None, {"to": self.contract_address, "from_block": from_block,
                                                     "request_id": request_id})
        out: list[dict[str, Any]] = meta["events"]
        return out

    def view(self, fn: str, *args: Any, request_id: int = -1) -> Any:
        """A read-only call, over the same carrier (so it costs a round trip to the gateway)."""
        from eth_abi.abi import decode

        data = bytes.fromhex(self.contract.encode_abi(fn, list(args))[2:])
        t0 = clock.now_ns()
        out, _ = self.carrier("chain_call", data, {"to": self.contract_address, "request_id": request_id})
        if self.on_span is not None:
            self.on_span("chain_call", t0, clock.now_ns(), request_id=request_id, fn=fn)
        f = self.contract.get_function_by_name(fn)
        types = [o["type"] if o["type"] != "tuple" else "(" + ",".join(c["type"] for c in o["components"]) + ")"
                 for o in f.abi["outputs"]]
        assert out is not None
        res = decode(types, out)
        return res[0] if len(res) == 1 else tuple(res)


def node_wallet(rt: Any, cfg: dict[str, Any], local: Any = None) -> ChainClient:
    """Node ``rt``'s wallet on the run's contract. ``cfg`` carries ``seed``, ``contract`` (address),
    ``contract_name``, ``chain_id`` and ``gateway``. The gateway's own node has no link to itself: it
    reaches the chain directly through ``local`` (the ChainActor's handle)."""
    from testbed.chain import compiled, node_key

    if rt.name == cfg["gateway"]:
        if local is None:
            raise ValueError(f"{rt.name} hosts the chain's gateway: give it the chain's handle")
        carrier = direct(local)
    else:
        carrier = over_links(rt, cfg["gateway"])
    return ChainClient(node_key(int(cfg["seed"]), rt.name), cfg["contract"], compiled(cfg["contract_name"])["abi"],
                       int(cfg["chain_id"]), carrier, on_span=rt.span)
