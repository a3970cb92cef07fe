"""``EVMChain``: one EVM chain for a run, embedded (py-evm via eth-tester) or a JSON-RPC node by URL.

Plain class; ``actors/chain.py`` hosts it in a Ray actor. Every method takes and returns plain
values (hex strings, ints, bytes), so it crosses Ray and our transport unchanged.

Block production: ``block_ms=None`` mines one block per transaction (automine, like a dev chain);
``block_ms=N`` turns automine off and mines every N emulated ms (testbed.clock), so a transaction waits for
the next block; ``timeout_s`` (how long a receipt may take) is emulated seconds too.
With ``url`` the node's own policy applies and ``block_ms`` must be left out.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from testbed import clock
from testbed.chain import compiled

logger = logging.getLogger(__name__)


def _plain(v: Any) -> Any:
    """Event args and call results as JSON-able values (bytes -> 0x hex)."""
    if isinstance(v, bytes | bytearray):
        return "0x" + bytes(v).hex()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


class EVMChain:
    """One chain: deploy contracts, take signed raw transactions, answer calls."""

    def __init__(self, url: str | None = None, block_ms: float | None = None, timeout_s: float = 60.0) -> None:
        from web3 import Web3

        self.url = url
        self.block_ms = block_ms
        self.timeout_s = timeout_s
        self._lock = threading.RLock()  # eth-tester is not thread-safe
        self._stop = threading.Event()
        self._contracts: dict[str, Any] = {}  # address -> web3 contract (for decoding logs)
        self._topics: dict[str, tuple[str, Any]] = {}  # topic0 -> (event name, contract)
        self.tester: Any = None
        if url is None:
            from eth_tester import EthereumTester, PyEVMBackend
            from web3 import EthereumTesterProvider

            self.tester = EthereumTester(PyEVMBackend())
            self.w3: Any = Web3(EthereumTesterProvider(self.tester))
            if block_ms is not None:
                self.tester.disable_auto_mine_transactions()
                threading.Thread(target=self._mine_loop, daemon=True, name="tb-miner").start()
        else:
            if block_ms is not None:
                raise ValueError("block_ms applies to the embedded chain; an RPC node mines by its own policy")
            self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s}))  # wall: HTTP socket timeout
        self.funder = self.w3.eth.accounts[0]

    # -- chain facts -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        with self._lock:
            blk = self.w3.eth.get_block("latest")
            return {"chain_id": int(self.w3.eth.chain_id), "block": int(blk["number"]),
                    "base_fee": int(blk.get("baseFeePerGas") or 0), "embedded": self.url is None,
                    "block_ms": self.block_ms, "client": str(self.w3.client_version)}

    def nonce(self, address: str) -> int:
        with self._lock:
            return int(self.w3.eth.get_transaction_count(address, "pending" if self.url else "latest"))

    def balance(self, address: str) -> int:
        with self._lock:
            return int(self.w3.eth.get_balance(address))

    def balances(self, addresses: list[str]) -> dict[str, int]:
        with self._lock:
            return {a: int(self.w3.eth.get_balance(a)) for a in addresses}

    # -- set-up (driver side, from the funded account) ----------------------------------------------
    def fund(self, addresses: list[str], wei: int) -> None:
        """Give each address ``wei`` from the chain's funded account (eth-tester's, or the node's first)."""
        hashes = []
        with self._lock:
            for a in addresses:
                hashes.append(self.w3.eth.send_transaction({"from": self.funder, "to": a, "value": wei}))
        for h in hashes:
            self._receipt(h)

    def mine(self, blocks: int) -> int:
        """Mine ``blocks`` empty blocks (eth-tester's ``mine_blocks``, or the node's ``evm_mine``); returns the
        latest block number. For tests of block deadlines."""
        with self._lock:
            if self.tester is not None:
                self.tester.mine_blocks(blocks)
            else:
                for _ in range(blocks):
                    self.w3.provider.make_request("evm_mine", [])
            return int(self.w3.eth.block_number)

    def deploy(self, name: str, args: list[Any], value: int = 0) -> str:
        c = compiled(name)
        with self._lock:
            factory = self.w3.eth.contract(abi=c["abi"], bytecode=c["bytecode"])
            h = factory.constructor(*args).transact({"from": self.funder, "value": value})
        rc = self._receipt(h)
        if rc["status"] != 1:
            raise RuntimeError(f"deploying {name} failed: {self._revert_reason(h)}")
        address = str(rc["contractAddress"])
        self.register(name, address)
        return address

    def register(self, name: str, address: str) -> None:
        """Know contract ``name`` at ``address`` (to decode its events and answer ``view``)."""
        from eth_utils.abi import event_abi_to_log_topic

        abi = compiled(name)["abi"]
        with self._lock:
            contract = self.w3.eth.contract(address=address, abi=abi)
        self._contracts[address.lower()] = contract
        for e in abi:
            if e.get("type") == "event":
                self._topics["0x" + event_abi_to_log_topic(e).hex()] = (e["name"], contract)

    # -- the data path: raw signed transactions and calls --------------------------------------------
    def submit(self, raw: bytes) -> dict[str, Any]:
        """Send a signed transaction and wait until it is mined. Returns its receipt as plain values;
        ``status`` is 1 (done), 0 (reverted by the contract; ``reason`` says why) or -1 (refused by the
        chain before execution: a bad signature, nonce or balance)."""
        t0 = clock.now_ns()
        try:
            with self._lock:
                h = self.w3.eth.send_raw_transaction(raw)
        except Exception as e:  # the chain refused it: nothing was recorded
            return {"status": -1, "reason": f"{type(e).__name__}: {e}", "tx": None, "gas_used": 0,
                    "gas_price": 0, "block": None, "events": [], "chain_ms": (clock.now_ns() - t0) / 1e6}
        rc = self._receipt(h)
        out = {"status": int(rc["status"]), "tx": "0x" + bytes(h).hex(), "gas_used": int(rc["gasUsed"]),
               "gas_price": int(rc.get("effectiveGasPrice") or 0), "block": int(rc["blockNumber"]),
               "events": self._events(rc), "reason": None, "chain_ms": (clock.now_ns() - t0) / 1e6}
        if out["status"] == 0:
            out["reason"] = self._revert_reason(h)
        return out

    def call(self, to: str, data: bytes) -> bytes:
        with self._lock:
            return bytes(self.w3.eth.call({"to": to, "data": "0x" + data.hex()}))

    def view(self, address: str, fn: str, args: list[Any]) -> Any:
        """Decoded result of a view function of a registered contract (driver-side reporting)."""
        with self._lock:
            return _plain(getattr(self._contracts[address.lower()].functions, fn)(*args).call())

    def events(self, address: str, from_block: int = 0) -> list[dict[str, Any]]:
        """Every decoded event of a registered contract since ``from_block`` (for the run's ledger table)."""
        with self._lock:
            logs = self.w3.eth.get_logs({"address": address, "fromBlock": from_block, "toBlock": "latest"})
        out = []
        for lg in logs:
            ev = self._decode(lg)
            if ev is not None:
                out.append(ev)
        return out

    # -- internals ------------------------------------------------------------------------------------
    def _mine_loop(self) -> None:
        assert self.block_ms is not None
        period = self.block_ms / 1e3
        nxt = clock.now() + period
        while not self._stop.wait(clock.wall(max(0.0, nxt - clock.now()))):
            with self._lock:
                self.tester.mine_blocks(1)
            nxt += period

    def _receipt(self, h: Any) -> Any:
        from web3.exceptions import TransactionNotFound

        deadline = clock.now() + self.timeout_s
        while True:
            try:
                with self._lock:
                    return self.w3.eth.get_transaction_receipt(h)
            except TransactionNotFound:
                if clock.now() > deadline:
                    raise TimeoutError(f"transaction {bytes(h).hex()} not mined within {self.timeout_s} s") from None
                clock.sleep(0.002 if self.url is None else 0.02)

    def _revert_reason(self, h: Any) -> str:
        """Replay a reverted transaction as a call on the state before its block, to read the reason."""
        with self._lock:
            tx = self.w3.eth.get_transaction(h)
            call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"], "gas": tx["gas"]}
            try:
                self.w3.eth.call(call, int(tx["blockNumber"]) - 1)
            except Exception as e:
                msg = str(e.args[0] if e.args else e)
                return msg.removeprefix("execution reverted: ")
        return "reverted (no reason given)"

    def _decode(self, lg: Any) -> dict[str, Any] | None:
        topics = lg.get("topics") or []
        if not topics:
            return None
        hit = self._topics.get("0x" + bytes(topics[0]).hex())
        if hit is None:
            return None
        name, contract = hit
        ev = getattr(contract.events, name)().process_log(lg)
        return {"event": name, "block": int(lg["blockNumber"]), "args": _plain(dict(ev["args"]))}

    def _events(self, rc: Any) -> list[dict[str, Any]]:
        out = []
        for lg in rc.get("logs") or []:
            ev = self._decode(lg)
            if ev is not None:
                out.append(ev)
        return out

    def close(self) -> None:
        self._stop.set()
