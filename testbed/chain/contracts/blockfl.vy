# pragma version ^0.4.0
"""
@title BlockFL: federated-learning updates recorded, verified and rewarded on chain (survey 000, VII-E)
@notice Clients stake a deposit and record, each round, the hash of their model update and their
        sample count. Staked validators check the updates off chain (the bytes against the recorded
        hash, and the update against the round's others) and vote one bitmap per round over the
        round's submissions. The coordinator closes the round with the hash of the new global model:
        a submission a strict majority accepted earns a share of the round's reward proportional to
        its sample count; one the majority rejected loses `slash_amount` of its deposit, which goes
        back to the reward pool. Only accepted, recorded updates may be aggregated. An address's role
        (client or validator) is fixed when it first registers, so a client cannot turn validator and vote
        for its own update; a round counts exactly `validators_needed` votes, so extra colluding voters
        cannot tip a majority that is defined against that number.
"""

MAX_SUBS: constant(uint256) = 256
MAX_VALIDATORS: constant(uint256) = 16

struct Submission:
    client: address
    update_hash: bytes32
    samples: uint256

event Submitted:
    round: indexed(uint256)
    client: indexed(address)
    index: uint256
    update_hash: bytes32
    samples: uint256

event Voted:
    round: indexed(uint256)
    validator: indexed(address)
    accepted: uint256

event Closed:
    round: indexed(uint256)
    accepted: uint256
    model_hash: bytes32
    paid: uint256

coordinator: public(address)
deposit_required: public(uint256)
slash_amount: public(uint256)
reward_per_round: public(uint256)
validators_needed: public(uint256)

deposits: public(HashMap[address, uint256])
is_validator: public(HashMap[address, bool])
registered: public(HashMap[address, bool])
credit: public(HashMap[address, uint256])
earned: public(HashMap[address, uint256])
slashed: public(HashMap[address, uint256])
pool: public(uint256)
subs: public(HashMap[uint256, HashMap[uint256, Submission]])
n_subs: public(HashMap[uint256, uint256])
submitted: public(HashMap[uint256, HashMap[address, bool]])
seen_hash: HashMap[uint256, HashMap[bytes32, bool]]
yes_votes: HashMap[uint256, HashMap[uint256, uint256]]
n_votes: public(HashMap[uint256, uint256])
has_voted: public(HashMap[uint256, HashMap[address, bool]])
closed: public(HashMap[uint256, bool])
accepted_mask: public(HashMap[uint256, uint256])
model_hash: public(HashMap[uint256, bytes32])


@deploy
@payable
def __init__(coordinator: address, deposit: uint256, slash: uint256, reward: uint256, k: uint256):
    assert deposit > 0, "the deposit must be positive"
    assert slash <= deposit, "cannot slash more than the deposit"
    assert k >= 1 and k <= MAX_VALIDATORS, "validators_needed out of range"
    self.coordinator = coordinator
    self.deposit_required = deposit
    self.slash_amount = slash
    self.reward_per_round = reward
    self.validators_needed = k
    self.pool = msg.value


@internal
@view
def _staked(who: address) -> bool:
    return self.deposits[who] >= self.deposit_required


@external
@payable
def fund():
    """Add to the reward pool."""
    self.pool += msg.value


@external
@payable
def register(validator: bool):
    """Stake (or top up) a deposit, as a client or as a validator."""
    assert self.deposits[msg.sender] + msg.value >= self.deposit_required, "deposit below the required stake"
    assert not self.registered[msg.sender] or self.is_validator[msg.sender] == validator, "the role is fixed at registration"
    self.registered[msg.sender] = True
    self.deposits[msg.sender] += msg.value
    self.is_validator[msg.sender] = validator


@external
def submit(rnd: uint256, update_hash: bytes32, samples: uint256):
    """Record this round's update: its hash and the number of samples it was trained on."""
    assert self._staked(msg.sender) and not self.is_validator[msg.sender], "not a staked client"
    assert not self.closed[rnd], "round closed"
    assert self.n_votes[rnd] == 0, "round already under validation"
    assert samples > 0, "an update needs samples"
    assert not self.submitted[rnd][msg.sender], "already submitted this round"
    assert not self.seen_hash[rnd][update_hash], "duplicate update"
    i: uint256 = self.n_subs[rnd]
    assert i < MAX_SUBS, "round full"
    self.subs[rnd][i] = Submission(client=msg.sender, update_hash=update_hash, samples=samples)
    self.n_subs[rnd] = i + 1
    self.submitted[rnd][msg.sender] = True
    self.seen_hash[rnd][update_hash] = True
    log Submitted(round=rnd, client=msg.sender, index=i, update_hash=update_hash, samples=samples)


@external
def vote(rnd: uint256, accepted: uint256):
    """A validator's verdict on the round: bit i set when submission i is accepted."""
    assert self.is_validator[msg.sender] and self._staked(msg.sender), "validator has no deposit"
    assert not self.closed[rnd], "round closed"
    assert self.n_subs[rnd] > 0, "nothing recorded to validate"
    assert not self.has_voted[rnd][msg.sender], "already voted"
    assert self.n_votes[rnd] < self.validators_needed, "the round has all its votes"
    self.has_voted[rnd][msg.sender] = True
    n: uint256 = self.n_subs[rnd]
    for i: uint256 in range(MAX_SUBS):
        if i >= n:
            break
        if accepted & (1 << i) != 0:
            self.yes_votes[rnd][i] += 1
    self.n_votes[rnd] += 1
    log Voted(round=rnd, validator=msg.sender, accepted=accepted)


@external
@view
def verdict(rnd: uint256) -> uint256:
    """Bitmap of the submissions a strict majority of `validators_needed` accepted (so far)."""
    k: uint256 = self.validators_needed
    mask: uint256 = 0
    for i: uint256 in range(MAX_SUBS):
        if i >= self.n_subs[rnd]:
            break
        if self.yes_votes[rnd][i] * 2 > k:
            mask |= 1 << i
    return mask


@external
def close_round(rnd: uint256, new_model_hash: bytes32):
    """Settle the round: rewards by sample count to accepted submissions, deposits cut for rejected ones."""
    assert msg.sender == self.coordinator, "only the coordinator closes rounds"
    assert not self.closed[rnd], "round closed"
    k: uint256 = self.validators_needed
    assert self.n_votes[rnd] >= k, "not enough validator votes"
    n: uint256 = self.n_subs[rnd]
    mask: uint256 = 0
    total: uint256 = 0
    for i: uint256 in range(MAX_SUBS):
        if i >= n:
            break
        if self.yes_votes[rnd][i] * 2 > k:
            mask |= 1 << i
            total += self.subs[rnd][i].samples
    reward: uint256 = min(self.reward_per_round, self.pool)
    paid: uint256 = 0
    for i: uint256 in range(MAX_SUBS):
        if i >= n:
            break
        who: address = self.subs[rnd][i].client
        if mask & (1 << i) != 0:
            r: uint256 = reward * self.subs[rnd][i].samples // total
            self.credit[who] += r
            self.earned[who] += r
            paid += r
        else:
            cut: uint256 = min(self.slash_amount, self.deposits[who])
            self.deposits[who] -= cut
            self.slashed[who] += cut
            self.pool += cut
    self.pool -= paid
    self.closed[rnd] = True
    self.accepted_mask[rnd] = mask
    self.model_hash[rnd] = new_model_hash
    log Closed(round=rnd, accepted=mask, model_hash=new_model_hash, paid=paid)


@external
def withdraw():
    """Pay out the sender's rewards."""
    amount: uint256 = self.credit[msg.sender]
    assert amount > 0, "nothing to withdraw"
    self.credit[msg.sender] = 0
    send(msg.sender, amount)
