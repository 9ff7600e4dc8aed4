"""ResNet-50 with torchvision's parameter names, exposing the feature maps MAGIC matches.

Parameter names follow torchvision (conv1, bn1, layer1.0.conv1, ..., fc) so that
torchvision-style and robustness-library checkpoints load without renaming beyond prefixes.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Feature taps used for the channel mean/std matching term: after the stem's ReLU
# (before max-pool), after block 3 of stage 1, block 4 of stage 2 and block 6 of stage 3.
FEATURE_TAPS = ("stem", "layer1.2", "layer2.3", "layer3.5")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ImageNet ResNet-50. Inputs are RGB in [0, 1]; normalisation happens inside."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        stages = []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = []
            for i in range(blocks):
                layers.append(Bottleneck(in_ch, width, stride if i == 0 else 1))
                in_ch = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(
        self, x: torch.Tensor, stop_after_features: bool = False
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Return (logits, feature maps at FEATURE_TAPS).

        With stop_after_features the last stage and the head are skipped and logits is None.
        """
        feats: list[torch.Tensor] = []
        x = (x - self.mean) / self.std
        x = self.relu(self.bn1(self.conv1(x)))
        feats.append(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        feats.append(x)
        x = self.layer2[:4](x)
        feats.append(x)
        x = self.layer3(x)
        feats.append(x)
        if stop_after_features:
            return None, feats
        x = self.layer4(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x), feats


def frozen(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients: the classifier is never trained here."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def untrained_resnet50(seed: int = 0) -> ResNet50:
    """A deterministic ResNet-50 with random weights, for running without real weights.

    Residual branches start at zero (torchvision's zero_init_residual) and BatchNorm statistics
    are calibrated, so feature maps have about the scale a trained network's have.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet50()
    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
    return frozen(calibrate_batchnorm(model, seed=seed))


@torch.no_grad()
def calibrate_batchnorm(model: ResNet50, seed: int = 0, batches: int = 4, size: int = 128) -> ResNet50:
    """Set BatchNorm running statistics from smooth random images (for untrained weights only).

    Freshly initialised BatchNorm layers assume zero-mean unit-variance inputs, which random
    convolutions do not produce: activations then grow with depth and the deep feature-statistics
    terms swamp every other loss. Calibrated statistics give an untrained network the per-layer
    scale a trained one has, so the whole pipeline can be exercised without real weights.
    """
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(batches):
        coarse = torch.rand(8, 3, size // 8, size // 8, generator=gen)
        images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                 align_corners=False)
        images = (images + 0.05 * torch.randn(images.shape, generator=gen)).clamp(0, 1)
        model(images)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.train(was_training)
    return model
