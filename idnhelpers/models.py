"""The paper's networks (Appendix A). Every model returns logits; losses apply the softmax."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class MnistCNN(nn.Module):
    """Appendix A's MNIST CNN: [conv 5x5, 20, relu, maxpool 2]; [conv 5x5, 50, relu, maxpool 2];
    [fc 800 -> 500, relu]; [fc 500 -> 10]."""

    def __init__(self, n_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class MLP(nn.Module):
    """A one-hidden-layer perceptron: the small model for scikit-learn's 8x8 digits in tests."""

    def __init__(self, n_classes: int = 10, in_features: int = 64, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.net(x)


class _WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko and Komodakis 2016), pre-activation blocks; WRN-28-10 for CIFAR-10."""

    def __init__(self, depth: int = 28, widen: int = 10, n_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth={depth} must be 6k + 4 (e.g. 16, 22, 28)")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        for stage in range(3):
            for i in range(n):
                c_in = widths[stage] if i == 0 else widths[stage + 1]
                layers.append(_WideBlock(c_in, widths[stage + 1], (1 if stage == 0 else 2) if i == 0 else 1))
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[3], n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.features(x))


def resnet50(n_classes: int = 14, weights_path: str | Path | None = None) -> nn.Module:
    """torchvision's ResNet-50; ImageNet weights are read from ``weights_path`` (no download)."""
    from torchvision.models import resnet50 as tv_resnet50

    model = tv_resnet50(weights=None)
    if weights_path is not None:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    return model


def wrn16_2(n_classes: int = 10) -> nn.Module:
    """WRN-16-2: a small Wide ResNet (0.7M weights) for quick CIFAR-10 trials and tests."""
    return WideResNet(depth=16, widen=2, n_classes=n_classes)


MODELS = {"mnist_cnn": MnistCNN, "mlp": MLP, "wrn28_10": WideResNet, "wrn16_2": wrn16_2, "resnet50": resnet50}


def build_model(name: str, n_classes: int = 10, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not known; choose one of {', '.join(MODELS)}")
    return MODELS[name](n_classes=n_classes, **kwargs)
