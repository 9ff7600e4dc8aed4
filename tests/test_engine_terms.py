"""Each MAGIC term and network on small tensors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from magic_server.engine import losses
from magic_server.engine.discriminator import CriticTrainer, PatchCritic, crops_at, gradient_penalty
from magic_server.engine.mask_net import MaskNet, binary_fractions
from magic_server.engine.presets import PRESETS, learning_rate, resolve_schedule
from magic_server.engine.resnet import ResNet50, frozen


def receptive_field(net: torch.nn.Module, size: int = 64) -> tuple[int, int]:
    """Extent (rows, cols) of input pixels that influence the centre output value."""
    net.eval()
    x = torch.randn(1, 3, size, size, requires_grad=True)
    out = net(x)
    cy, cx = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, 0, cy, cx].backward()
    hit = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = hit.any(dim=1).nonzero()
    cols = hit.any(dim=0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_channel_stats_match_manual_computation():
    f = torch.randn(2, 3, 5, 7)
    mean, std = losses.channel_stats(f)
    assert torch.allclose(mean, f.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(std, f.std(dim=(2, 3), unbiased=False), atol=1e-4)


def test_feature_stats_loss_is_zero_at_reference_and_positive_elsewhere():
    ref = [torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)]
    targets = [losses.channel_stats(f) for f in ref]
    same = [f.expand(3, -1, -1, -1) for f in ref]
    assert float(losses.feature_stats_loss(same, targets)) < 1e-8
    shifted = [f + 1.0 for f in same]  # mean off by one in every channel
    assert float(losses.feature_stats_loss(shifted, targets)) == pytest.approx(2.0, rel=1e-4)


def test_class_loss_is_cross_entropy_to_the_target():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    expected = -torch.log_softmax(logits, dim=1)[:, 1].mean()
    assert torch.allclose(losses.class_loss(logits, 1), expected)


def test_mask_loss_prefers_predictions_that_agree_with_the_guide():
    guide = torch.zeros(1, 1, 8, 8)
    guide[..., 2:6, 2:6] = 1
    fractions = binary_fractions(guide)
    agree = (fractions * 2 - 1) * 6
    assert losses.mask_loss(agree.expand(2, -1, -1, -1), fractions) < 0.01
    assert losses.mask_loss(-agree, fractions) > 5


def test_two_label_cross_entropy_is_the_papers_bce():
    """K = 2 through the K-label code is the paper's binary term: softmax over (0, l) is the
    sigmoid of l."""
    logit = torch.randn(2, 1, 6, 6)
    guide = torch.rand(1, 1, 6, 6)
    bce = F.binary_cross_entropy_with_logits(logit, guide.expand_as(logit))
    two = torch.cat([torch.zeros_like(logit), logit], dim=1)
    assert float(losses.mask_loss(two, binary_fractions(guide))) == pytest.approx(float(bce),
                                                                                  rel=1e-5)


def test_total_variation_terms_are_zero_on_flat_images_only():
    flat = torch.full((1, 3, 8, 8), 0.3)
    noise = torch.rand(1, 3, 8, 8)
    assert float(losses.total_variation_l1(flat)) == 0
    assert float(losses.total_variation_l2(flat)) == 0
    assert float(losses.total_variation_l1(noise)) > 0.1
    assert float(losses.total_variation_l2(noise)) > 0.01


def test_l2_prior_is_the_mean_per_sample_norm():
    x = torch.zeros(2, 3, 2, 2)
    x[0, 0, 0, 0] = 3.0
    x[1, 0, 0, 0] = 4.0
    assert float(losses.l2_prior(x)) == pytest.approx(3.5)


def test_resnet_exposes_the_four_feature_taps_at_their_depths():
    net = frozen(ResNet50())
    logits, feats = net.forward_with_features(torch.rand(1, 3, 224, 224))
    assert logits.shape == (1, 1000)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14)]
    assert all(not p.requires_grad for p in net.parameters())


def test_resnet_has_torchvision_parameter_names():
    names = set(ResNet50().state_dict())
    for name in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
                 "layer3.5.conv3.weight", "layer4.2.bn3.bias", "fc.weight"):
        assert name in names
    assert len([n for n in names if n.endswith("num_batches_tracked")]) == 53


def test_patch_critic_sees_21_pixel_patches():
    assert receptive_field(PatchCritic()) == (21, 21)


def test_mask_net_is_local_with_about_13_pixel_receptive_field():
    rows, cols = receptive_field(MaskNet())
    assert 11 <= rows <= 17 and 11 <= cols <= 17


def test_gradient_penalty_vanishes_for_a_unit_gradient_critic():
    class Linear(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = w

        def forward(self, x):
            return (x * self.w).sum(dim=(1, 2, 3))

    w = torch.randn(1, 3, 6, 6)
    alpha = torch.rand(4, generator=torch.Generator().manual_seed(0))
    real, fake = torch.randn(4, 3, 6, 6), torch.randn(4, 3, 6, 6)
    unit = gradient_penalty(Linear(w / w.norm()), real, fake, alpha)
    double = gradient_penalty(Linear(2 * w / w.norm()), real, fake, alpha)
    assert float(unit) < 1e-10
    assert float(double) == pytest.approx(1.0, rel=1e-5)


def test_crops_by_index_are_the_slices_the_draw_names():
    """The critic crops by tensor indices (so that a captured step crops where each
    iteration's draw says): each crop is the slice at its drawn image, row and column, mirrored
    when its flip draw is below 0.5."""
    imgs = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    index = torch.tensor([[0, 1, 1, 0, 1], [0, 6, 3, 2, 5], [6, 0, 2, 4, 1]])
    flip = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.5])
    crops = crops_at(imgs, index, flip, 4)
    assert crops.shape == (5, 3, 4, 4)
    for c, (i, y, x), f in zip(crops, index.T.tolist(), flip.tolist()):
        piece = imgs[i, :, y:y + 4, x:x + 4]
        assert torch.equal(c, piece.flip(-1) if f < 0.5 else piece)


def test_the_critics_draw_stays_inside_both_images_and_follows_the_seed():
    real = torch.randn(1, 3, 70, 90)
    draws = [CriticTrainer(real, torch.Generator().manual_seed(4)).draw((1, 3, 70, 90))
             for _ in range(2)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    index, floats = draws[0]
    assert index.shape == (6, 8) and floats.shape == (3, 8)
    assert int(index[[0, 3]].max()) == 0
    assert int(index[[1, 4]].max()) <= 70 - 64 and int(index[[2, 5]].max()) <= 90 - 64
    assert float(floats.min()) >= 0 and float(floats.max()) < 1


def test_presets_keep_the_paper_proportions():
    paper = resolve_schedule("paper", None)
    assert (paper.iterations, paper.discriminator_start, paper.warmup) == (18_000, 5_000, 100)
    for name in PRESETS:
        s = resolve_schedule(name, None)
        assert s.discriminator_start / s.iterations == pytest.approx(5_000 / 18_000, abs=0.02)
    custom = resolve_schedule("draft", 360)
    assert (custom.iterations, custom.discriminator_start, custom.warmup) == (360, 100, 2)
    with pytest.raises(KeyError):
        resolve_schedule("ultra", None)


def test_learning_rate_warms_up_then_decays_to_zero():
    s = resolve_schedule("paper", None)
    lrs = [learning_rate(i, s, 0.2) for i in range(s.iterations)]
    assert lrs[0] == pytest.approx(0.2 / 100)
    assert lrs[99] == pytest.approx(0.2)
    assert max(lrs) == pytest.approx(0.2)
    assert all(a >= b for a, b in itertools.pairwise(lrs[100:]))
    assert lrs[-1] < 1e-6
    mid = 100 + (s.iterations - 100) // 2
    assert lrs[mid] == pytest.approx(0.1, abs=1e-3)
    assert not math.isnan(sum(lrs))


def test_mask_term_backpropagates_only_to_the_image():
    net = MaskNet().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    losses.mask_loss(net(x), binary_fractions(torch.ones(1, 1, 16, 16))).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None for p in net.parameters())
