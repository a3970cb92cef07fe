"""Seed 004's learned policies: DIL (deep imitation of the optimum), SOS (one hidden layer) and DROS (DQN).

DIL/SOS: a ReLU network from the state's features to T x 3 logits, trained with per-sub-task cross-entropy
(multi-label classification with three classes per label) and Adam on demonstrations of the optimum.

DROS: a DQN on the sequential view of the same problem. The state is the features, the sub-task index and
the previous location; the action places the current sub-task; the reward is minus the cost that step
adds (the result's return to the device is added to the last step), so the episode return is minus the
decision's cost. Experience replay and a target network, trained on the same cost model.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from workloads.dil.costs import LOCAL, Prices, States, step_cost, transfer


def _mlp(n_in: int, hidden: list[int], n_out: int) -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class ImitationPolicy:
    """DIL (deep) or SOS (shallow) imitation of the optimal decisions."""

    def __init__(self, n_features: int, t: int, hidden: list[int], seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        self.t = t
        self.net = _mlp(n_features, hidden, 3 * t)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 20, batch: int = 256, lr: float = 1e-3,
            seed: int = 0) -> list[float]:
        import torch

        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        xt = torch.from_numpy((x - self.mean) / self.std).float()
        yt = torch.from_numpy(y).long()
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(epochs):
            total = 0.0
            for idx in torch.split(torch.randperm(len(yt), generator=gen), batch):
                logits = self.net(xt[idx]).view(-1, self.t, 3)
                loss = loss_fn(logits.reshape(-1, 3), yt[idx].reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            losses.append(total / len(yt))
        return losses

    def decide(self, x: np.ndarray) -> np.ndarray:
        import torch

        assert self.mean is not None and self.std is not None
        with torch.inference_mode():
            logits = self.net(torch.from_numpy((x - self.mean) / self.std).float()).view(-1, self.t, 3)
        out: np.ndarray = logits.argmax(-1).numpy()
        return out


class DQNPolicy:
    """DROS: a DQN placing the sub-tasks one after another."""

    def __init__(self, n_features: int, t: int, hidden: list[int] | None = None, seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        self.t = t
        n_in = n_features + t + 3
        self.q = _mlp(n_in, hidden or [256, 128], 3)
        self.target = _mlp(n_in, hidden or [256, 128], 3)
        self.target.load_state_dict(self.q.state_dict())
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)

    def _obs(self, f: np.ndarray, t: np.ndarray, prev: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.std is not None
        return np.concatenate([(f - self.mean) / self.std, np.eye(self.t)[np.minimum(t, self.t - 1)],
                               np.eye(3)[prev]], axis=1).astype(np.float32)

    @staticmethod
    def _rewards(st: States, t: int, prev: np.ndarray, act: np.ndarray, p: Prices) -> np.ndarray:
        """Minus the cost sub-task t adds at ``act`` after ``prev`` (the last one also returns the result)."""
        r = np.zeros(st.n)
        for a in range(3):
            for b in range(3):
                m = (prev == a) & (act == b)
                if not m.any():
                    continue
                s, res = transfer(st, st.data[:, t], a, b, p)
                e, er = step_cost(st, t, b, p)
                c = p.time * (s + e) + res + er
                if t == st.t - 1:
                    s2, r2 = transfer(st, st.data[:, st.t], b, LOCAL, p)
                    c = c + p.time * s2 + r2
                r -= np.where(m, c, 0)
        return r

    def fit(self, states: States, p: Prices, steps: int = 3000, batch: int = 256, lr: float = 1e-3,
            gamma: float = 1.0, sync_every: int = 200, eps_end: float = 0.05) -> list[float]:
        """Train on episodes drawn from ``states`` (each step runs a batch of parallel episodes)."""
        import torch

        f_all = states.features()
        self.mean, self.std = f_all.mean(0), f_all.std(0) + 1e-6
        opt = torch.optim.Adam(self.q.parameters(), lr=lr)
        buf: list[tuple[np.ndarray, ...]] = []
        losses = []
        scale = float(np.median(-self._rewards(states.take(slice(0, 1000)), 0, np.zeros(min(1000, states.n), int),
                                               np.zeros(min(1000, states.n), int), p))) or 1.0
        self.scale = scale
        for step in range(steps):
            eps = max(eps_end, 1.0 - step / (0.6 * steps))
            idx = self.rng.integers(0, states.n, 64)
            st = states.take(idx)
            f = f_all[idx]
            prev = np.zeros(64, dtype=np.int64)
            for t in range(states.t):
                obs = self._obs(f, np.full(64, t), prev)
                with torch.inference_mode():
                    greedy_a = self.q(torch.from_numpy(obs)).argmax(1).numpy()
                act = np.where(self.rng.random(64) < eps, self.rng.integers(0, 3, 64), greedy_a)
                rew = self._rewards(st, t, prev, act, p) / scale
                nxt = self._obs(f, np.full(64, t + 1), act)
                buf.append((obs, act, rew, nxt, np.full(64, t == states.t - 1)))
                prev = act
            buf = buf[-2000:]
            picks = [buf[i] for i in self.rng.integers(0, len(buf), max(1, batch // 64))]
            o, a, r, n2, d = (torch.from_numpy(np.concatenate(z)) for z in zip(*picks, strict=True))
            with torch.no_grad():
                tgt = r.float() + gamma * (~d) * self.target(n2).max(1).values
            qsa = self.q(o).gather(1, a.long().view(-1, 1)).squeeze(1)
            loss = torch.nn.functional.smooth_l1_loss(qsa, tgt)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            losses.append(loss.item())
            if step % sync_every == 0:
                self.target.load_state_dict(self.q.state_dict())
        return losses

    def decide(self, f: np.ndarray) -> np.ndarray:
        import torch

        prev = np.zeros(len(f), dtype=np.int64)
        out = np.zeros((len(f), self.t), dtype=np.int64)
        with torch.inference_mode():
            for t in range(self.t):
                a = self.q(torch.from_numpy(self._obs(f, np.full(len(f), t), prev))).argmax(1).numpy()
                out[:, t] = a
                prev = a
        return out


def median_us(fn: Any, reps: int = 200) -> float:
    """Median wall time of ``fn()`` in microseconds (host time: a decision is host CPU work, not emulated)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()  # wall: a policy's decision time on the host
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e3)  # wall: decision time on the host
    return float(np.median(times))
