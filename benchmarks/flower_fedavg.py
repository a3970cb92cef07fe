"""The Flower side of ``testbed bench fl-flower``: the same FedAvg task in Flower's simulation engine.

Run by the benchmark with the interpreter of a separate virtual environment that has ``flwr[simulation]``
(its Ray pin differs from the testbed's). Input: an .npz with the digits shards, the initial weights and
the hyperparameters. Output (stdout, last line): JSON with the wall time at the end of every round.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(path: str) -> None:
    import torch
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation
    from torch import nn

    d = np.load(path)
    n_clients, rounds = int(d["n_clients"]), int(d["rounds"])
    lr, epochs, batch = float(d["lr"]), int(d["epochs"]), int(d["batch"])
    torch.set_num_threads(1)

    def net() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def to_list(model: nn.Module) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in model.parameters()]

    def load(model: nn.Module, arrays: list[np.ndarray]) -> None:
        with torch.no_grad():
            for p, a in zip(model.parameters(), arrays, strict=True):
                p.copy_(torch.from_numpy(np.asarray(a)))

    w0 = d["w0"]
    init = net()
    shapes = [p.shape for p in init.parameters()]
    arrays, i = [], 0
    for s in shapes:
        n = int(np.prod(s))
        arrays.append(w0[i:i + n].reshape(s))
        i += n

    class Client(NumPyClient):
        def __init__(self, cid: int) -> None:
            idx = d[f"idx_{cid}"]
            self.x = (torch.from_numpy(d["x"][idx]).float() / 255 - 0.5) / 0.5
            self.y = torch.from_numpy(d["y"][idx]).long()

        def fit(self, parameters: list[np.ndarray], config: dict[str, object]) -> tuple[list[np.ndarray], int, dict]:
            model = net()
            load(model, parameters)
            opt = torch.optim.SGD(model.parameters(), lr=lr)
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(epochs):
                for b in torch.split(torch.randperm(len(self.y)), batch):
                    opt.zero_grad()
                    loss_fn(model(self.x[b]), self.y[b]).backward()
                    opt.step()
            return to_list(model), len(self.y), {}

    def client_fn(context: Context) -> object:
        return Client(int(context.node_config["partition-id"])).to_client()

    ends: list[float] = []

    class Timed(FedAvg):
        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            out = super().aggregate_fit(server_round, results, failures)
            ends.append(time.monotonic())
            return out

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n_clients,
                         min_available_clients=n_clients, initial_parameters=ndarrays_to_parameters(arrays))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    t0 = time.monotonic()
    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=n_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    print(json.dumps({"start": t0, "round_ends": ends, "total_s": time.monotonic() - t0}))


if __name__ == "__main__":
    main(sys.argv[1])
