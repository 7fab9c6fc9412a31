"""The paper's networks (Appendix A). Every model returns logits; losses apply the softmax."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` bit for bit: ATen's kernel whenever gradients are on (also under vmap),
    else two maxima of strided views, 3-6x faster on a CPU (NOTES.md, issue 20)."""
    if torch.is_grad_enabled():
        return F.max_pool2d(x, 2)
    x = x[:, :, : x.shape[2] // 2 * 2, : x.shape[3] // 2 * 2]  # max_pool2d drops an odd last row or column
    rows = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
    return torch.maximum(rows[:, :, :, 0::2], rows[:, :, :, 1::2])


class MnistCNN(nn.Module):
    """Appendix A's MNIST CNN: [conv 5x5, 20, relu, maxpool 2]; [conv 5x5, 50, relu, maxpool 2];
    [fc 800 -> 500, relu]; [fc 500 -> 10]. Relu after max-pool: they commute, on a quarter of the values."""

    def __init__(self, n_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, n_classes)

    def forward(self, x):
        x = F.relu(max_pool_2x2(self.conv1(x)))
        x = F.relu(max_pool_2x2(self.conv2(x)))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class MLP(nn.Module):
    """A one-hidden-layer perceptron (256 units): the model of digits and feature vectors."""

    def __init__(self, n_classes: int = 10, in_features: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 256), nn.ReLU(), nn.Linear(256, n_classes))

    def forward(self, x):
        return self.net(x)


class GlobalAvgPool(nn.Module):
    """Adaptive average pooling to 1 x 1 + flatten, with a batching rule for vmap."""

    def forward(self, x):
        return x.mean((2, 3))


class _WideBlock(nn.Module):
    """A pre-activation block; ``official``: the official code's, with the stride on the second
    convolution, biased convolutions and the 1x1 shortcut on the raw input (not its pre-activation)."""

    def __init__(self, c_in: int, c_out: int, stride: int, official: bool):
        super().__init__()
        self.official = official
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1 if official else stride, 1, bias=official)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride if official else 1, 1, bias=official)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=official)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(x if self.official else o))


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko and Komodakis 2016), WRN-28-10 of Appendix A's CIFAR protocol, He
    initialisation. ``official``: as chenpf1025/IDN's ``networks/wideresnet.py`` (model
    ``"wrn28_10_official"``): biased convolutions, PyTorch's initialisation, final BatchNorm momentum 0.9."""

    def __init__(self, depth: int = 28, widen: int = 10, n_classes: int = 10, in_channels: int = 3,
                 official: bool = False):
        super().__init__()
        n, rest = divmod(depth - 4, 6)  # blocks per stage
        if rest:
            raise ValueError(f"depth={depth} must be 6k + 4 (e.g. 16, 22, 28)")
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=official)]
        for stage in range(3):  # each stage's first block changes the width and, after the first, halves the size
            for i in range(n):
                c_in, stride = (widths[stage], 1 if stage == 0 else 2) if i == 0 else (widths[stage + 1], 1)
                layers.append(_WideBlock(c_in, widths[stage + 1], stride, official))
        bn = nn.BatchNorm2d(widths[3], momentum=0.9 if official else 0.1)
        self.features = nn.Sequential(*layers, bn, nn.ReLU(), GlobalAvgPool())
        self.fc = nn.Linear(widths[3], n_classes)
        if not official:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.features(x))


def resnet50(n_classes: int, pretrained: str | Path | None = None) -> nn.Module:
    """torchvision's ResNet-50 with a new last layer; ``pretrained``: a state_dict file, never downloaded."""
    from torchvision.models import resnet50 as tv_resnet50

    model = tv_resnet50(weights=None)
    if pretrained is not None:
        model.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    return model


# name -> builder(n_classes, input_shape): one entry per network
MODELS = {
    "mnist_cnn": lambda n_classes, shape: MnistCNN(n_classes, in_channels=shape[0]),
    "mlp": lambda n_classes, shape: MLP(n_classes, in_features=math.prod(shape)),
    "wrn28_10": lambda n_classes, shape: WideResNet(28, 10, n_classes, in_channels=shape[0]),
    "wrn28_10_official": lambda n_classes, shape: WideResNet(28, 10, n_classes, shape[0], official=True),
    "wrn16_2": lambda n_classes, shape: WideResNet(16, 2, n_classes, in_channels=shape[0]),  # quick CIFAR trials
    "resnet50": lambda n_classes, shape: resnet50(n_classes),
}


def build_model(name: str, n_classes: int, input_shape: tuple[int, ...], pretrained: str | None = None) -> nn.Module:
    """Network ``name`` for inputs of ``input_shape`` (C x H x W) and ``n_classes`` outputs;
    ``pretrained``: a state_dict file for all but the last layer (resnet50 only)."""
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not allowed: one of {sorted(MODELS)}")
    if pretrained is not None and name != "resnet50":
        raise ValueError(f"pretrained={pretrained!r} is not allowed with model={name!r}: only resnet50 loads "
                         "pretrained weights")
    return MODELS[name](n_classes, tuple(input_shape)) if pretrained is None else resnet50(n_classes, pretrained)
