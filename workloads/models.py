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


def _yolov2_tiny(num_classes: int, seed: int, weights_path: str | None = None) -> Any:
    """A YOLOv2-tiny-like detector (Darknet layout: 3x3 conv + batch norm + leaky ReLU, 2x2 max pools;
    the stride-1 pool is a 3x3 one here), output 5 anchors x (5 + classes) per cell of a 13x13 grid."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c_in = 3
    for i, c in enumerate((16, 32, 64, 128, 256, 512, 1024, 1024)):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.1)]
        if i < 5:
            layers.append(nn.MaxPool2d(2, 2))
        elif i == 5:
            layers.append(nn.MaxPool2d(3, 1, padding=1))
        c_in = c
    layers.append(nn.Conv2d(c_in, 5 * (5 + num_classes), 1))
    model = nn.Sequential(*layers)
    if weights_path:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval()


for _arch in ("alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2"):
    MODELS.register(_arch)(ModelDef(_arch, (3, 224, 224), 1000, _tv(_arch)))
MODELS.register("small_cnn")(ModelDef("small_cnn", (3, 32, 32), 10, _small_cnn))
MODELS.register("yolov2_tiny")(ModelDef("yolov2_tiny", (3, 416, 416), 20, _yolov2_tiny))
