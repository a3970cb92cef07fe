# pragma version ^0.4.0
"""
@title Incentivized, validated offloading (survey 000, section IX-C3)
@notice Every device and edge node stakes a deposit. A device posts a task with a bounty
        ("require"); edge nodes that compute it record a hash of their result ("complete"), in
        order. Other staked edge nodes re-execute the task off chain and vote, one bitmap per
        validator, on which recorded results are correct. After `validators_needed` votes the
        task settles: the first recorded claim that a strict majority found correct earns the
        bounty (less the validators' share); every claim the majority rejected loses
        `slash_amount` of its deposit, shared by the validators who voted with the majority.
        If no claim is correct the bounty goes back to the requester. A requester can neither claim
        nor validate its own task. A task not settled within `timeout_blocks` blocks of its posting
        expires: anyone may then return its bounty to the requester (`expire`), so funds never lock
        when validators stay away or a claim blocks cancellation.
"""

MAX_CLAIMS: constant(uint256) = 8
MAX_VALIDATORS: constant(uint256) = 16

OPEN: constant(uint8) = 1
VALIDATING: constant(uint8) = 2
PAID: constant(uint8) = 3
REFUNDED: constant(uint8) = 4

struct Task:
    requester: address
    bounty: uint256
    input_hash: bytes32
    spec: bytes32
    status: uint8
    n_claims: uint256
    n_votes: uint256
    winner: address
    deadline: uint256

event Registered:
    who: indexed(address)
    edge: bool
    deposit: uint256

event Required:
    task_id: indexed(uint256)
    requester: indexed(address)
    bounty: uint256
    input_hash: bytes32
    spec: bytes32

event Completed:
    task_id: indexed(uint256)
    edge: indexed(address)
    claim: uint256
    result_hash: bytes32

event Voted:
    task_id: indexed(uint256)
    validator: indexed(address)
    verdicts: uint256

event Settled:
    task_id: indexed(uint256)
    winner: address
    paid: uint256
    slashed_total: uint256

event Expired:
    task_id: indexed(uint256)
    refunded: uint256

event Slashed:
    task_id: indexed(uint256)
    edge: indexed(address)
    amount: uint256

deposit_required: public(uint256)
slash_amount: public(uint256)
validators_needed: public(uint256)
validator_share_bps: public(uint256)
timeout_blocks: public(uint256)

deposits: public(HashMap[address, uint256])
is_edge: public(HashMap[address, bool])
credit: public(HashMap[address, uint256])
earned: public(HashMap[address, uint256])
slashed: public(HashMap[address, uint256])
tasks: public(HashMap[uint256, Task])
claim_edge: public(HashMap[uint256, HashMap[uint256, address]])
claim_hash: public(HashMap[uint256, HashMap[uint256, bytes32]])
has_claimed: public(HashMap[uint256, HashMap[address, bool]])
has_voted: public(HashMap[uint256, HashMap[address, bool]])
voter: HashMap[uint256, HashMap[uint256, address]]
verdict: HashMap[uint256, HashMap[uint256, uint256]]
yes_votes: public(HashMap[uint256, HashMap[uint256, uint256]])
task_count: public(uint256)


@deploy
def __init__(deposit: uint256, slash: uint256, k: uint256, share_bps: uint256, timeout_blocks: uint256):
    assert deposit > 0, "the deposit must be positive"
    assert slash <= deposit, "cannot slash more than the deposit"
    assert k >= 1 and k <= MAX_VALIDATORS, "validators_needed out of range"
    assert share_bps <= 10000, "share above 100 %"
    assert timeout_blocks >= 1, "a task needs at least one block to settle"
    self.timeout_blocks = timeout_blocks
    self.deposit_required = deposit
    self.slash_amount = slash
    self.validators_needed = k
    self.validator_share_bps = share_bps


@internal
@view
def _staked(who: address) -> bool:
    return self.deposits[who] >= self.deposit_required


@external
@view
def staked(who: address) -> bool:
    return self._staked(who)


@external
@payable
def register(edge: bool):
    """Put down (or top up) the deposit that lets a device request and an edge node serve."""
    assert self.deposits[msg.sender] + msg.value >= self.deposit_required, "deposit below the required stake"
    self.deposits[msg.sender] += msg.value
    self.is_edge[msg.sender] = edge
    log Registered(who=msg.sender, edge=edge, deposit=self.deposits[msg.sender])


@external
@payable
def require_task(input_hash: bytes32, spec: bytes32) -> uint256:
    """Post a task (hash of its input, and of what to run) with a bounty held in escrow."""
    assert self._staked(msg.sender), "requester has no deposit"
    assert msg.value > 0, "a task needs a bounty"
    tid: uint256 = self.task_count + 1
    self.task_count = tid
    self.tasks[tid] = Task(requester=msg.sender, bounty=msg.value, input_hash=input_hash, spec=spec,
                           status=OPEN, n_claims=0, n_votes=0, winner=empty(address),
                           deadline=block.number + self.timeout_blocks)
    log Required(task_id=tid, requester=msg.sender, bounty=msg.value, input_hash=input_hash, spec=spec)
    return tid


@external
def complete(task_id: uint256, result_hash: bytes32):
    """Record that the sender computed the task, and the hash of the result it returned."""
    status: uint8 = self.tasks[task_id].status
    assert status != 0, "no such task"
    assert status == OPEN, "task is closed to claims"
    assert block.number <= self.tasks[task_id].deadline, "task expired"
    assert self.is_edge[msg.sender] and self._staked(msg.sender), "not a staked edge node"
    assert msg.sender != self.tasks[task_id].requester, "the requester cannot claim its own task"
    assert not self.has_claimed[task_id][msg.sender], "already claimed this task"
    n: uint256 = self.tasks[task_id].n_claims
    assert n < MAX_CLAIMS, "too many claims"
    self.has_claimed[task_id][msg.sender] = True
    self.claim_edge[task_id][n] = msg.sender
    self.claim_hash[task_id][n] = result_hash
    self.tasks[task_id].n_claims = n + 1
    log Completed(task_id=task_id, edge=msg.sender, claim=n, result_hash=result_hash)


@external
def vote(task_id: uint256, verdicts: uint256):
    """A validator's verdicts on the recorded claims: bit i set when claim i's result is correct."""
    status: uint8 = self.tasks[task_id].status
    assert status != 0, "no such task"
    assert status == OPEN or status == VALIDATING, "task already settled"
    assert self.tasks[task_id].n_claims > 0, "nothing recorded to validate"
    assert block.number <= self.tasks[task_id].deadline, "task expired"
    assert self.is_edge[msg.sender] and self._staked(msg.sender), "validator has no deposit"
    assert msg.sender != self.tasks[task_id].requester, "the requester cannot validate its own task"
    assert not self.has_claimed[task_id][msg.sender], "a claimant cannot validate"
    assert not self.has_voted[task_id][msg.sender], "already voted"
    self.has_voted[task_id][msg.sender] = True
    self.tasks[task_id].status = VALIDATING
    n: uint256 = self.tasks[task_id].n_claims
    for i: uint256 in range(MAX_CLAIMS):
        if i >= n:
            break
        if verdicts & (1 << i) != 0:
            self.yes_votes[task_id][i] += 1
    v: uint256 = self.tasks[task_id].n_votes
    self.voter[task_id][v] = msg.sender
    self.verdict[task_id][v] = verdicts & ((1 << n) - 1)
    self.tasks[task_id].n_votes = v + 1
    log Voted(task_id=task_id, validator=msg.sender, verdicts=verdicts)
    if v + 1 == self.validators_needed:
        self._settle(task_id)


@internal
def _settle(task_id: uint256):
    k: uint256 = self.validators_needed
    n: uint256 = self.tasks[task_id].n_claims
    bounty: uint256 = self.tasks[task_id].bounty
    majority: uint256 = 0
    winner: address = empty(address)
    pool: uint256 = 0
    for i: uint256 in range(MAX_CLAIMS):
        if i >= n:
            break
        edge: address = self.claim_edge[task_id][i]
        if self.yes_votes[task_id][i] * 2 > k:
            majority |= 1 << i
            if winner == empty(address):
                winner = edge
        else:
            cut: uint256 = min(self.slash_amount, self.deposits[edge])
            self.deposits[edge] -= cut
            self.slashed[edge] += cut
            pool += cut
            log Slashed(task_id=task_id, edge=edge, amount=cut)
    slashed_total: uint256 = pool
    paid: uint256 = 0
    if winner != empty(address):
        share: uint256 = bounty * self.validator_share_bps // 10000
        paid = bounty - share
        self.credit[winner] += paid
        self.earned[winner] += paid
        pool += share
        self.tasks[task_id].status = PAID
    else:
        self.credit[self.tasks[task_id].requester] += bounty
        self.tasks[task_id].status = REFUNDED
    self.tasks[task_id].winner = winner
    # validators whose verdicts equal the majority's share the validators' pool
    agree: uint256 = 0
    for j: uint256 in range(MAX_VALIDATORS):
        if j >= k:
            break
        if self.verdict[task_id][j] == majority:
            agree += 1
    if agree > 0 and pool > 0:
        each: uint256 = pool // agree
        for j: uint256 in range(MAX_VALIDATORS):
            if j >= k:
                break
            if self.verdict[task_id][j] == majority:
                who: address = self.voter[task_id][j]
                self.credit[who] += each
                self.earned[who] += each
        pool -= each * agree
    if pool > 0:
        self.credit[self.tasks[task_id].requester] += pool
    log Settled(task_id=task_id, winner=winner, paid=paid, slashed_total=slashed_total)


@external
def cancel(task_id: uint256):
    """The requester takes its bounty back from a task nobody claimed."""
    assert self.tasks[task_id].status != 0, "no such task"
    assert self.tasks[task_id].requester == msg.sender, "only the requester can cancel"
    assert self.tasks[task_id].status == OPEN and self.tasks[task_id].n_claims == 0, "task has claims"
    self.tasks[task_id].status = REFUNDED
    self.credit[msg.sender] += self.tasks[task_id].bounty


@external
def expire(task_id: uint256):
    """Anyone: return the bounty of a task that was not settled by its deadline to its requester. Its claims
    were never judged, so no deposit is cut and nobody is paid."""
    status: uint8 = self.tasks[task_id].status
    assert status != 0, "no such task"
    assert status == OPEN or status == VALIDATING, "task already settled"
    assert block.number > self.tasks[task_id].deadline, "the task has not timed out"
    self.tasks[task_id].status = REFUNDED
    bounty: uint256 = self.tasks[task_id].bounty
    self.credit[self.tasks[task_id].requester] += bounty
    log Expired(task_id=task_id, refunded=bounty)


@external
def withdraw():
    """Pay out the sender's earnings and refunds."""
    amount: uint256 = self.credit[msg.sender]
    assert amount > 0, "nothing to withdraw"
    self.credit[msg.sender] = 0
    send(msg.sender, amount)
