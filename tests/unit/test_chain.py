"""The contracts on the embedded EVM (py-evm): the protocol, and every attack the issue lists rejected."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("eth_tester")

from testbed.chain import address_of, compiled, keccak, node_key  # noqa: E402
from testbed.chain.client import ChainClient, Rejected, direct  # noqa: E402
from testbed.chain.evm import EVMChain  # noqa: E402

ETH = 10**18
DEPOSIT, SLASH, BOUNTY = ETH, ETH // 2, ETH // 10
TIMEOUT = 30  # blocks: one per transaction here, and the expiry test mines past it


@pytest.fixture(scope="module")
def contract_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contracts")


GANACHE = [Path(__file__).resolve().parents[2] / ".chain-node/node_modules/.bin/ganache",
           Path(shutil.which("ganache") or "/nonexistent")]


@pytest.fixture(scope="module")
def rpc_node() -> Iterator[str]:
    """A real JSON-RPC client (Ganache, installed by scripts/setup-chain-node.sh) on a loopback port."""
    exe = next((g for g in GANACHE if g.exists()), None)
    if exe is None:
        pytest.skip("no JSON-RPC chain node: run scripts/setup-chain-node.sh")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(exe), "--host", "127.0.0.1", "--port", str(port), "--quiet",
                             "--wallet.totalAccounts", "2", "--wallet.defaultBalance", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the JSON-RPC node did not come up")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()  # ours, by PID
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(params=["embedded", "json-rpc"])
def market(request: pytest.FixtureRequest, contract_cache: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EVMChain, str, Any]]:
    monkeypatch.setenv("TESTBED_CONTRACT_CACHE", str(contract_cache))
    led = EVMChain(request.getfixturevalue("rpc_node") if request.param == "json-rpc" else None)
    addr = led.deploy("offload_market", [DEPOSIT, SLASH, 2, 1000, TIMEOUT])
    info = led.info()

    def wallet(name: str) -> ChainClient:
        key = node_key(7, name)
        c = ChainClient(key, addr, compiled("offload_market")["abi"], info["chain_id"], direct(led))
        led.fund([c.address], 10 * ETH)
        return c

    yield led, addr, wallet
    led.close()


def setup_parties(wallet: Any) -> dict[str, ChainClient]:
    p = {n: wallet(n) for n in ("dev", "e1", "e2", "e3", "e4")}
    p["dev"].transact("register", False, value=DEPOSIT)
    for e in ("e1", "e2", "e3", "e4"):
        p[e].transact("register", True, value=DEPOSIT)
    return p


def test_protocol_pays_first_correct_claim_and_slashes_a_wrong_one(market: Any) -> None:
    led, addr, wallet = market
    p = setup_parties(wallet)
    rc = p["dev"].transact("require_task", keccak(b"input"), keccak(b"spec"), value=BOUNTY)
    tid = rc["events"][0]["args"]["task_id"]
    assert tid == 1
    good, bad = keccak(b"result"), keccak(b"garbage")
    p["e1"].transact("complete", tid, bad)    # recorded first, but wrong
    p["e2"].transact("complete", tid, good)
    p["e3"].transact("vote", tid, 0b10)       # claim 0 wrong, claim 1 right
    rc = p["e4"].transact("vote", tid, 0b10)  # the second vote settles
    names = [e["event"] for e in rc["events"]]
    assert "Settled" in names and "Slashed" in names
    settled = next(e for e in rc["events"] if e["event"] == "Settled")["args"]
    assert settled["winner"] == p["e2"].address
    assert settled["paid"] == BOUNTY - BOUNTY // 10
    assert led.view(addr, "deposits", [p["e1"].address]) == DEPOSIT - SLASH
    assert led.view(addr, "credit", [p["e2"].address]) == BOUNTY - BOUNTY // 10
    # the validators share the slashed half-deposit and the 10 % validation share
    share = (SLASH + BOUNTY // 10) // 2
    assert led.view(addr, "credit", [p["e3"].address]) == share
    before = led.balance(p["e2"].address)
    rc = p["e2"].transact("withdraw")
    assert led.balance(p["e2"].address) - before == BOUNTY - BOUNTY // 10 - rc["gas_used"] * rc["gas_price"]


def test_no_correct_claim_refunds_the_requester(market: Any) -> None:
    led, addr, wallet = market
    p = setup_parties(wallet)
    tid = p["dev"].transact("require_task", keccak(b"x"), keccak(b"s"), value=BOUNTY)["events"][0]["args"]["task_id"]
    p["e1"].transact("complete", tid, keccak(b"wrong"))
    p["e3"].transact("vote", tid, 0)
    p["e4"].transact("vote", tid, 0)
    assert led.view(addr, "credit", [p["dev"].address]) == BOUNTY
    assert led.view(addr, "tasks", [tid])[4] == 4  # REFUNDED


def test_forged_signature_is_rejected(market: Any) -> None:
    """A transaction whose signature was tampered with: the chain refuses it or the recovered sender,
    not a depositor, is refused by the contract. Either way nothing is recorded."""
    led, addr, wallet = market
    p = setup_parties(wallet)
    tid = p["dev"].transact("require_task", keccak(b"x"), keccak(b"s"), value=BOUNTY)["events"][0]["args"]["task_id"]
    raw = bytearray(p["e1"].sign("complete", [tid, keccak(b"r")]))
    raw[-5] ^= 0xFF  # flip bits inside s
    rc = p["e1"].send_raw(bytes(raw), "complete")
    assert rc["status"] in (-1, 0)
    if rc["status"] == 0:
        assert "not a staked edge node" in rc["reason"]
    assert led.view(addr, "tasks", [tid])[5] == 0  # no claim recorded
    # an outsider signing for itself is refused by the contract
    outsider = wallet("outsider")
    with pytest.raises(Rejected, match="not a staked edge node"):
        outsider.transact("complete", tid, keccak(b"r"))


def test_complete_for_missing_task_second_claim_and_outsider_vote_rejected(market: Any) -> None:
    led, addr, wallet = market
    p = setup_parties(wallet)
    with pytest.raises(Rejected, match="no such task"):
        p["e1"].transact("complete", 99, keccak(b"r"))
    tid = p["dev"].transact("require_task", keccak(b"x"), keccak(b"s"), value=BOUNTY)["events"][0]["args"]["task_id"]
    p["e1"].transact("complete", tid, keccak(b"r"))
    with pytest.raises(Rejected, match="already claimed"):
        p["e1"].transact("complete", tid, keccak(b"r2"))
    outsider = wallet("outsider")
    with pytest.raises(Rejected, match="validator has no deposit"):
        outsider.transact("vote", tid, 1)
    with pytest.raises(Rejected, match="a claimant cannot validate"):
        p["e1"].transact("vote", tid, 1)
    p["e2"].transact("vote", tid, 1)
    with pytest.raises(Rejected, match="already voted"):
        p["e2"].transact("vote", tid, 1)
    with pytest.raises(Rejected, match="closed to claims"):
        p["e3"].transact("complete", tid, keccak(b"r"))
    with pytest.raises(Rejected, match="requester has no deposit"):
        outsider.transact("require_task", keccak(b"x"), keccak(b"s"), value=BOUNTY)
    with pytest.raises(Rejected, match="deposit below"):
        outsider.transact("register", True, value=DEPOSIT // 2)


def test_a_requester_cannot_claim_or_validate_its_own_task(market: Any) -> None:
    led, addr, wallet = market
    p = setup_parties(wallet)
    # the requester is also a staked edge node: without the check it could claim its own bounty back and judge it
    p["e1"].transact("require_task", keccak(b"x"), keccak(b"s"), value=BOUNTY)
    tid = led.view(addr, "task_count", [])
    with pytest.raises(Rejected, match="the requester cannot claim its own task"):
        p["e1"].transact("complete", tid, keccak(b"r"))
    p["e2"].transact("complete", tid, keccak(b"r"))
    with pytest.raises(Rejected, match="the requester cannot validate its own task"):
        p["e1"].transact("vote", tid, 1)
    assert led.view(addr, "tasks", [tid])[6] == 0  # no vote counted


def test_an_unsettled_task_expires_and_refunds_without_slashing(market: Any) -> None:
    """Funds do not lock: a claimed task that no validator settles (cancel refuses it: it has a claim) is
    refunded by anyone once its deadline has passed, and nobody's deposit is cut."""
    led, addr, wallet = market
    p = setup_parties(wallet)
    tid = p["dev"].transact("require_task", keccak(b"x"), keccak(b"s"), value=BOUNTY)["events"][0]["args"]["task_id"]
    p["e1"].transact("complete", tid, keccak(b"r"))
    p["e2"].transact("vote", tid, 1)  # one of the two votes needed: VALIDATING, stuck without the timeout
    with pytest.raises(Rejected, match="task has claims"):
        p["dev"].transact("cancel", tid)
    with pytest.raises(Rejected, match="has not timed out"):
        p["e4"].transact("expire", tid)
    deadline = led.view(addr, "tasks", [tid])[8]
    led.mine(deadline - led.info()["block"] + 1)
    with pytest.raises(Rejected, match="task expired"):
        p["e3"].transact("vote", tid, 1)
    rc = p["e4"].transact("expire", tid)
    assert rc["events"][0]["event"] == "Expired" and rc["events"][0]["args"]["refunded"] == BOUNTY
    assert led.view(addr, "tasks", [tid])[4] == 4  # REFUNDED
    assert led.view(addr, "credit", [p["dev"].address]) == BOUNTY
    assert led.view(addr, "deposits", [p["e1"].address]) == DEPOSIT
    with pytest.raises(Rejected, match="already settled"):
        p["e4"].transact("expire", tid)


REWARD = 10**17


def blockfl(seed: int, k: int, parties: tuple[str, ...]) -> tuple[EVMChain, str, dict[str, ChainClient]]:
    """An embedded chain with the BlockFL contract (``k`` validators needed, coordinator "server"), and a funded
    wallet per party, each registered: names starting with "v" as validators, the others as clients."""
    led = EVMChain()
    addr = led.deploy("blockfl", [address_of(node_key(seed, "server")), DEPOSIT, SLASH, REWARD, k], value=10 * REWARD)
    cid, abi = led.info()["chain_id"], compiled("blockfl")["abi"]
    w = {n: ChainClient(node_key(seed, n), addr, abi, cid, direct(led)) for n in ("server", *parties)}
    led.fund([c.address for c in w.values()], 10 * ETH)
    for n in parties:
        w[n].transact("register", n.startswith("v"), value=DEPOSIT)
    return led, addr, w


def test_blockfl_roles_are_fixed_and_votes_capped(contract_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client cannot re-register as a validator and vote for its own update, and a round counts exactly
    ``validators_needed`` votes: a late colluding validator cannot tip the majority."""
    monkeypatch.setenv("TESTBED_CONTRACT_CACHE", str(contract_cache))
    led, addr, w = blockfl(4, 2, ("c1", "c2", "v1", "v2", "v3"))
    w["c1"].transact("submit", 0, keccak(b"poison"), 100)
    w["c2"].transact("submit", 0, keccak(b"honest"), 100)
    with pytest.raises(Rejected, match="the role is fixed at registration"):
        w["c1"].transact("register", True, value=DEPOSIT)
    with pytest.raises(Rejected, match="validator has no deposit"):
        w["c1"].transact("vote", 0, 0b11)
    w["v1"].transact("vote", 0, 0b10)  # the poisoned update rejected
    w["v2"].transact("vote", 0, 0b10)
    with pytest.raises(Rejected, match="the round has all its votes"):
        w["v3"].transact("vote", 0, 0b11)  # a third voter, colluding with c1
    assert w["c1"].view("verdict", 0) == 0b10
    w["server"].transact("close_round", 0, keccak(b"m"))
    assert led.view(addr, "deposits", [w["c1"].address]) == DEPOSIT - SLASH
    w["c1"].transact("register", False, value=SLASH)  # topping up as what it is stays allowed
    led.close()


def test_blockfl_rewards_by_samples_and_slashes_rejected(contract_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_CONTRACT_CACHE", str(contract_cache))
    led, addr, w = blockfl(3, 1, ("c1", "c2", "c3", "v1"))
    w["c1"].transact("submit", 0, keccak(b"u1"), 100)
    w["c2"].transact("submit", 0, keccak(b"u2"), 300)
    with pytest.raises(Rejected, match="duplicate update"):
        w["c3"].transact("submit", 0, keccak(b"u2"), 300)
    w["c3"].transact("submit", 0, keccak(b"u3"), 500)
    with pytest.raises(Rejected, match="already submitted"):
        w["c1"].transact("submit", 0, keccak(b"u1b"), 100)
    with pytest.raises(Rejected, match="not a staked client"):
        w["v1"].transact("submit", 0, keccak(b"v"), 1)
    with pytest.raises(Rejected, match="validator has no deposit"):
        w["c1"].transact("vote", 0, 0b111)
    w["v1"].transact("vote", 0, 0b011)  # c3's update rejected
    assert w["c1"].view("verdict", 0) == 0b011
    with pytest.raises(Rejected, match="only the coordinator"):
        w["c1"].transact("close_round", 0, keccak(b"m"))
    w["server"].transact("close_round", 0, keccak(b"m"))
    with pytest.raises(Rejected, match="round closed"):
        w["c1"].transact("submit", 0, keccak(b"late"), 10)
    assert led.view(addr, "credit", [w["c1"].address]) == REWARD * 100 // 400
    assert led.view(addr, "credit", [w["c2"].address]) == REWARD * 300 // 400
    assert led.view(addr, "credit", [w["c3"].address]) == 0
    assert led.view(addr, "deposits", [w["c3"].address]) == DEPOSIT - SLASH
    led.close()


@pytest.mark.parametrize("params, path, needle", [
    ("{chain: {url: 'http://203.0.113.5:8545'}}", "workload.params.chain.url", "on this machine"),
    # an emulated address is reached from the host namespace, where it is not ours (userspace: off the machine)
    ("{chain: {url: 'http://198.18.0.7:8545'}}", "workload.params.chain.url", "loopback"),
    ("{chain: {url: 'file:///etc/passwd'}}", "workload.params.chain.url", "http://"),
    ("{misbehaviour: [{node: d1, behaviour: garbage}]}", "workload.params.misbehaviour[0].node", "not an edge"),
    ("{chain: {validators: 5}}", "workload.params.chain.validators", "need at least 7 edge nodes"),
    ("{chain: {host: e1}}", "workload.params.chain.host", "cannot also host"),
    ("{chain: {deposit_eth: 1, slash_eth: 2}}", "workload.params.chain.slash_eth", "exceeds"),
])
def test_bad_market_configs(tmp_path: Path, params: str, path: str, needle: str) -> None:
    from testbed.config.loader import load_experiment
    from testbed.errors import ConfigError

    root = Path(__file__).resolve().parents[2]
    exp = tmp_path / "e.yaml"
    exp.write_text(f"name: e\ntopology: {root / 'topologies/chain_market.yaml'}\n"
                   f"workload: {{name: chain_offloading, params: {params}}}\n")
    with pytest.raises(ConfigError) as ei:
        load_experiment(exp)
    assert needle in str(ei.value) and str(exp) in str(ei.value)
    assert path in str(ei.value) or (ei.value.path or "").startswith(path.rsplit(".", 1)[0])


def test_blockfl_config_checks(tmp_path: Path) -> None:
    from testbed.config.loader import load_experiment
    from testbed.errors import ConfigError

    root = Path(__file__).resolve().parents[2]
    exp = tmp_path / "e.yaml"
    for params, needle in [
        ("{variants: [{chain: true}]}", "no chain is configured"),
        ("{chain: {}, variants: [{chain: true, compression: topk}]}", "uncompressed"),
        ("{chain: {}, variants: [{attackers: [{client: edge_a, kind: poison}]}]}", "not a client"),
        ("{chain: {url: 'http://203.0.113.5:8545'}, variants: [{chain: true}]}", "loopback"),
        ("{variants: [{local_epochs: 1}, {local_epochs: 2}]}", "both labelled"),  # would share attacker state
        ("{variants: [{deadline_s: 0.3}]}", "flat, synchronous"),  # fl_hier5 has edges: hierarchical by default
        ("{variants: [{hierarchical: false, mode: async, deadline_s: 0.3}]}", "flat, synchronous"),
        ("{chain: {url: 'http://198.18.0.7:8545'}, variants: [{chain: true}]}", "loopback"),
    ]:
        exp.write_text(f"name: e\ntopology: {root / 'topologies/fl_hier5.yaml'}\n"
                       f"workload: {{name: federated, params: {params}}}\n")
        with pytest.raises(ConfigError, match=needle):
            load_experiment(exp)
