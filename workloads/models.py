"""Model builders: torchvision architectures and a small CNN of our own, random or local weights only."""

from __future__ import annotations

from typing import Any

from testbed.workload import MODELS, ModelDef


def _tv(arch: str) -> Any:
    def build(num_classes: int, seed: int, weights_path: str | None = None) -> Any:
        import torch
        import torchvision

        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if weights_path:
            model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        return model.eval()

    return build


def _small_cnn(num_classes: int, seed: int, weights_path: str | None = None) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, num_classes),
    )
    if weights_path:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval()


for _arch in ("alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2"):
    MODELS.register(_arch)(ModelDef(_arch, (3, 224, 224), 1000, _tv(_arch)))
MODELS.register("small_cnn")(ModelDef("small_cnn", (3, 32, 32), 10, _small_cnn))
