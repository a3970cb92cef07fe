"""Models for federated learning, with the entry points a client calls in its capped compute process.

``set_data(x, client, labels)`` stores a client's shard in the process (a device pool's clients share
one process, keyed by client); ``local_train(w, client, ...)`` starts from the flat global weights
``w``, runs local SGD (with FedProx's proximal term when ``mu > 0``) or computes one full-batch
gradient (FedSGD), and returns the flat delta (or gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from testbed.workload import MODELS, ModelDef


def flat(model: Any) -> np.ndarray:
    import torch

    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().astype(np.float32)


def load_flat(model: Any, w: Any) -> None:
    import torch

    w = w.detach().float().clone() if isinstance(w, torch.Tensor) else torch.from_numpy(np.array(w, np.float32))
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(w[i:i + n].view_as(p))
            i += n


def _arch(name: str, num_classes: int) -> Any:
    from torch import nn

    if name == "fl_mlp":  # McMahan et al.'s "2NN", scaled to 8x8 digits
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, num_classes))
    return nn.Sequential(  # a small CNN
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def _wrapper() -> Any:
    import torch
    from torch import nn

    class FLNet(nn.Module):
        def __init__(self, arch: str, num_classes: int) -> None:
            super().__init__()
            self.arch, self.num_classes = arch, num_classes
            self.net = _arch(arch, num_classes)
            self.data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = self.net(x)
            return y

        def set_data(self, x: torch.Tensor, client: str, labels: list[int]) -> torch.Tensor:
            self.data[client] = ((x - 0.5) / 0.5, torch.as_tensor(labels, dtype=torch.long))
            return torch.zeros(1)

        def local_train(self, w: torch.Tensor, client: str, epochs: int, lr: float, batch: int, mu: float,
                        mode: str, seed: int) -> torch.Tensor:
            loss_fn = nn.CrossEntropyLoss()
            # the compute process calls entry points in inference mode; training leaves it
            with torch.inference_mode(False), torch.enable_grad():
                x, y = (t.clone() for t in self.data[client])
                model = _arch(self.arch, self.num_classes)
                load_flat(model, w.clone())
                w0 = [p.detach().clone() for p in model.parameters()]
                if mode == "gradient":
                    model.zero_grad()
                    loss_fn(model(x), y).backward()
                    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])
                opt = torch.optim.SGD(model.parameters(), lr=lr)
                gen = torch.Generator().manual_seed(seed)
                for _ in range(epochs):
                    for idx in torch.split(torch.randperm(len(y), generator=gen), batch):
                        opt.zero_grad()
                        loss = loss_fn(model(x[idx]), y[idx])
                        if mu > 0:
                            loss = loss + mu / 2 * sum(((p - q) ** 2).sum() for p, q in
                                                      zip(model.parameters(), w0, strict=True))
                        loss.backward()
                        opt.step()
            return torch.cat([(p.detach() - q).reshape(-1) for p, q in zip(model.parameters(), w0, strict=True)])

    return FLNet


def initial(arch: str, num_classes: int, seed: int) -> Any:
    """The model's initial weights for ``seed``, without the warm-up ``build`` adds (what the driver needs)."""
    import torch

    torch.manual_seed(seed)
    return _wrapper()(arch, num_classes).eval()


def build(arch: str) -> Any:
    def b(num_classes: int, seed: int, weights_path: str | None = None) -> Any:
        import torch

        model = initial(arch, num_classes, seed)
        # A process's first training step pays a one-off set-up: torch imports its optimizer and compiler
        # machinery lazily (1.9 s of CPU here, against 11 ms for the next step). Charged to a round, at the
        # class's slowdown, it timed first rounds out. Pay it here, at load time (setup, not emulated work),
        # on random data with a throwaway client; the model's own weights are not touched.
        x = torch.rand(8, *MODELS.get(arch).input_shape)
        model.data["_warm"] = (x, torch.zeros(8, dtype=torch.long))
        model.local_train(torch.as_tensor(flat(model)), "_warm", epochs=1, lr=0.1, batch=8, mu=0.0, mode="sgd",
                          seed=0)
        del model.data["_warm"]
        return model

    return b


MODELS.register("fl_mlp")(ModelDef("fl_mlp", (1, 8, 8), 10, build("fl_mlp")))
MODELS.register("fl_cnn")(ModelDef("fl_cnn", (1, 8, 8), 10, build("fl_cnn")))
