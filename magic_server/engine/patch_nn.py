"""Patch nearest-neighbour term (SemIA's patch-wise loss, GPNN's coarse-to-fine matching).

Every patch of x' centred in (or next to) the edit region is matched with its nearest patch of
the photo x, where "near" is appearance plus label layout: a patch that should show the object
(the guide says so) matches patches of x that show the object, and a background patch next to
the new object's edge matches background patches at an edge of the same shape. The matched
patches are averaged into one target image, each vote weighted by how well its patch matched,
and the term is the squared distance of x' to that target. With fixed matches the weighted
average is this term's minimiser, so a few match/step rounds are the EM of patch-based
synthesis; between two matchings a step costs one subtraction.

Descriptors are principal components of the photo's patches (appearance) next to a 3x3 grid of
each patch's label fractions (layout). Small levels are searched exhaustively in chunks, one
matmul each; large levels search a window around the match that the coarser level (or the
previous round) found, so the finest level costs a few gathers per patch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PATCH = 7
COMPONENTS = 24
# Weight of the label layout against appearance: one 3x3 cell fully mislabelled costs this
# much squared distance, more than two of the photo's patches differ in appearance, so labels
# decide and appearance chooses among the patches that fit.
LABEL_WEIGHT = 6.0
QUERY_ELEMENTS = 16_000_000  # distance-matrix entries computed at once (64 MB)
EXHAUSTIVE_LIMIT = 150_000_000  # queries x references above which the search is local
VOTE_FLOOR = 8.0  # a vote never weighs less than exp(-8) of a typical one
LOCAL_RADIUS = 3  # the local search's window: (2r+1)^2 candidates around the prior match


def label_layout(labels: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(1, K, H, W) label fractions -> (K*9, L): each valid patch's fractions on a 3x3 grid
    of cells (its centre and eight neighbours `patch // 3` px away), L = patches of size
    `patch` at every valid position, in raster order."""
    cell = max(1, patch // 3)
    pooled = F.avg_pool2d(labels, 3, stride=1, padding=1, count_include_pad=False)
    grid = F.unfold(pooled, kernel_size=3, dilation=cell)[0]
    h, w = labels.shape[-2:]
    span = 2 * cell + 1
    off = patch // 2 - cell  # a 7 px patch's centre sits 1 px further in than a 5 px span's
    ys = torch.arange(h - patch + 1, device=labels.device) + off
    xs = torch.arange(w - patch + 1, device=labels.device) + off
    return grid[:, (ys[:, None] * (w - span + 1) + xs[None, :]).flatten()]


@dataclass
class Matches:
    target: torch.Tensor  # (N, 3, H, W): weighted mean of the matched patches covering a pixel
    covered: torch.Tensor  # (N, 1, H, W): 1 where at least one matched patch covers the pixel
    field: torch.Tensor  # (N, 2, gh, gw): matched patch position (y, x) of each patch position
    distance: torch.Tensor  # (N,): mean nearest-patch distance (descriptor units)


def upscale_field(field: torch.Tensor, grid: tuple[int, int], refs_from: tuple[int, int],
                  refs_to: tuple[int, int]) -> torch.Tensor:
    """A coarser level's match field (positions in a reference grid `refs_from`), as a prior
    for a level whose patch grid is `grid` and whose reference grid is `refs_to` (all (rows,
    cols))."""
    up = F.interpolate(field, size=grid, mode="nearest")
    scale = torch.tensor([refs_to[0] / refs_from[0], refs_to[1] / refs_from[1]],
                         device=field.device)
    up = up * scale.view(1, 2, 1, 1)
    up[:, 0].clamp_(0, refs_to[0] - 1)
    up[:, 1].clamp_(0, refs_to[1] - 1)
    return up.round()


class PatchBank:
    """The photo's patches at one pyramid level, ready for nearest-neighbour queries."""

    def __init__(self, photo: torch.Tensor, labels: torch.Tensor, patch: int = PATCH,
                 components: int = COMPONENTS, max_refs: int = 40_000,
                 gen: torch.Generator | None = None,
                 blurred: torch.Tensor | None = None) -> None:
        """photo: (1, 3, H, W) normalised; labels: (1, K, H, W) fractions of each label.

        blurred: the photo degraded as x' is when it arrives from the coarser level
        (downscaled, then upscaled). Matching an upscaled x' with these keys finds the patch
        whose sharp version belongs there, instead of a patch of the photo that happens to be
        smooth (GPNN's keys); the votes are always the sharp patches."""
        self.patch = patch
        h, w = photo.shape[-2:]
        self.grid = (h - patch + 1, w - patch + 1)
        raw = F.unfold(photo.float(), patch)[0].T.contiguous()  # (L, D), raster order
        self.values = raw
        sample = torch.arange(raw.shape[0], device=raw.device)
        if sample.numel() > max_refs:  # exhaustive search runs on a random subset
            pick = torch.randperm(raw.shape[0], generator=gen)[:max_refs].sort().values
            sample = pick.to(raw.device)
        self.sample = sample
        self.mean = raw[sample].mean(0, keepdim=True)
        centred = raw[sample] - self.mean
        k = min(components, centred.shape[1], max(1, centred.shape[0] - 1))
        cov = centred.T @ centred / max(1, centred.shape[0] - 1)
        self.basis = torch.linalg.eigh(cov)[1][:, -k:].flip(-1).contiguous()  # (D, k)
        self.layout = LABEL_WEIGHT * label_layout(labels.float(), patch).T  # (L, 9K)
        self.label_index = labels.argmax(1, keepdim=True)  # (1, 1, H, W)
        self.keys = self._keys(photo)
        self.blurred_keys = self._keys(blurred) if blurred is not None else self.keys

    @functools.cached_property
    def pixel_labels(self) -> torch.Tensor:
        """Each patch pixel's label (L, patch*patch), for votes that count only where the
        labels agree (match's `agree`; built on first use)."""
        return F.unfold(self.label_index.float(), self.patch)[0].T.to(torch.int16)

    def _keys(self, image: torch.Tensor) -> torch.Tensor:
        raw = F.unfold(image.float(), self.patch)[0].T
        return torch.cat([(raw - self.mean) @ self.basis, self.layout], dim=1).contiguous()

    def describe(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Descriptors (N, L, k + 9K) of every valid patch of images (N, 3, H, W), given the
        labels (1, K, H, W) they should carry."""
        raw = F.unfold(images.float(), self.patch).transpose(1, 2)
        appearance = (raw - self.mean) @ self.basis
        layout = LABEL_WEIGHT * label_layout(labels.float(), self.patch).T
        return torch.cat([appearance, layout.expand(images.shape[0], -1, -1)], dim=2)

    def exhaustive(self, queries: torch.Tensor, keys: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Index (into all patches) of and squared distance to the nearest sampled key."""
        refs = keys[self.sample]
        norms = (refs * refs).sum(1)
        index = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
        dist = torch.empty(queries.shape[0], device=queries.device)
        chunk = max(256, QUERY_ELEMENTS // max(1, refs.shape[0]))
        for s in range(0, queries.shape[0], chunk):
            q = queries[s : s + chunk]
            best, arg = torch.addmm(norms[None], q, refs.T, alpha=-2).min(1)
            index[s : s + chunk] = self.sample[arg]
            dist[s : s + chunk] = best + (q * q).sum(1)
        return index, dist.clamp(min=0)

    def local(self, queries: torch.Tensor, keys: torch.Tensor, prior: torch.Tensor,
              radius: int = LOCAL_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest key within a (2r+1)^2 window around each query's prior match (M, 2)."""
        gh, gw = self.grid
        offsets = torch.arange(-radius, radius + 1, device=queries.device)
        dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
        index = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
        dist = torch.empty(queries.shape[0], device=queries.device)
        per = dy.numel() * keys.shape[1]
        chunk = max(256, QUERY_ELEMENTS // per)
        for s in range(0, queries.shape[0], chunk):
            p = prior[s : s + chunk].long()
            ys = (p[:, :1] + dy.flatten()[None]).clamp(0, gh - 1)
            xs = (p[:, 1:] + dx.flatten()[None]).clamp(0, gw - 1)
            cand = ys * gw + xs  # (m, C)
            d = ((keys[cand] - queries[s : s + chunk, None]) ** 2).sum(-1)
            best, arg = d.min(1)
            index[s : s + chunk] = cand.gather(1, arg[:, None])[:, 0]
            dist[s : s + chunk] = best
        return index, dist

    @torch.no_grad()
    def match(self, images: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor,
              blurred: bool = False, prior: torch.Tensor | None = None,
              agree: bool = False) -> Matches:
        """Match the patches of `images` whose centre lies in `centres` ((H, W) bool) and vote
        their nearest photo patches into a target image.

        agree: a matched patch votes for a pixel only with its own pixels of the label that
        pixel should carry (where no vote agrees, all votes count). A layout edit can ask for
        label neighbours the photo never shows side by side (coffee on the saucer): the
        nearest patches then straddle other edges, and without this their wrong side would
        be blended in.

        prior: (N, 2, qh, qw) match field (bank positions of the query grid's patches) from
        the previous round or the coarser level (upscale_field); with one, large levels search
        only around it."""
        n = images.shape[0]
        h, w = images.shape[-2:]
        gh, gw = self.grid
        qh, qw = h - self.patch + 1, w - self.patch + 1  # the query grid (the bank's may differ)
        r = self.patch // 2
        where = centres[r : h - r, r : w - r].flatten().nonzero().squeeze(1)
        descriptors = self.describe(images, labels)
        keys = self.blurred_keys if blurred else self.keys
        use_local = prior is not None and where.numel() * self.sample.numel() > EXHAUSTIVE_LIMIT
        votes = torch.zeros(n, descriptors.shape[1], self.values.shape[1], device=images.device)
        weights = torch.zeros(n, descriptors.shape[1], device=images.device)
        pp = self.patch * self.patch
        agreement = None
        if agree:
            wanted = F.unfold(labels.argmax(1, keepdim=True).float(), self.patch)[0].T
            agreement = torch.zeros(n, descriptors.shape[1], pp, device=images.device)
        field = torch.stack(torch.meshgrid(torch.arange(qh, device=images.device).clamp(max=gh - 1),
                                           torch.arange(qw, device=images.device).clamp(max=gw - 1),
                                           indexing="ij")).float().expand(n, -1, -1, -1).clone()
        distances = []
        for i in range(n):
            queries = descriptors[i, where]
            if use_local:
                index, dist = self.local(queries, keys, prior[i].flatten(1).T[where])
            else:
                index, dist = self.exhaustive(queries, keys)
            # Votes of well-matched patches count more, so a pixel takes the value that the
            # consistent majority of its patches agree on instead of a blur of all of them.
            scale = dist.median().clamp(min=1e-6) if dist.numel() else dist.new_ones(())
            weights[i, where] = torch.exp(-(dist / (2 * scale)).clamp(max=VOTE_FLOOR))
            votes[i, where] = self.values[index] * weights[i, where, None]
            if agreement is not None:
                agreement[i, where] = (self.pixel_labels[index].float()
                                       == wanted[where]).float()
            field[i, 0].view(-1)[where] = (index // gw).float()
            field[i, 1].view(-1)[where] = (index % gw).float()
            distances.append(dist.sqrt().mean() if dist.numel() else dist.new_zeros(()))
        size = (h, w)
        total = F.fold(votes.transpose(1, 2), size, self.patch)
        count = F.fold(weights[:, None].expand(-1, pp, -1), size, self.patch)
        covered = (count > 1e-8).float()
        target = total / count.clamp(min=1e-8)
        if agreement is not None:
            gate = agreement.transpose(1, 2)  # (N, pp, L)
            agreeing = F.fold(votes.transpose(1, 2) * gate.repeat(1, 3, 1), size, self.patch)
            agreed = F.fold(weights[:, None] * gate, size, self.patch)
            target = torch.where(agreed > 1e-8, agreeing / agreed.clamp(min=1e-8), target)
        return Matches(target, covered, field, torch.stack(distances))


def patch_loss(x: torch.Tensor, target: torch.Tensor, covered: torch.Tensor,
               region: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of x to the voted target (Matches.target) over the covered part
    (Matches.covered) of `region`."""
    weight = covered * region
    return ((x - target) ** 2 * weight).sum() / (weight.sum() * 3).clamp(1)
