"""The weights of MAGIC's terms: the paper's, and the product presets' (the patch term, with the
classifier's terms as shares of its pull)."""

from __future__ import annotations

from dataclasses import dataclass

from magic_server.engine.api import EditKind


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights, plus `keep`: L1 to the photo outside the edit region (as GANPaint
    Studio does) so that the pasted-back region has no visible seam, and `patch`, the patch
    nearest-neighbour term of the product presets (0 in the paper's objective).
    `critic` is 0.1 instead of 0.05 for pure position control (move)."""

    classifier: float = 1.0
    feature_stats: float = 500.0
    mask: float = 30.0
    critic: float = 0.05
    tv_l1: float = 1e-3
    tv_l2: float = 1e-3
    l2: float = 1e-5
    keep: float = 3.0
    patch: float = 0.0
    # True (product presets): `classifier` and `feature_stats` are shares of the patch term's
    # pull, not weights: each term's gradient is rescaled at every patch matching so that its
    # norm is that fraction of the patch term's (engine/term_balance.py)
    relative: bool = False
    smoothing: int = 0  # > 0: the judged gradient averaged over this many noisy, shifted copies

    @classmethod
    def for_mode(cls, mode: str) -> LossWeights:
        return cls(critic=0.1) if mode == EditKind.MOVE else cls()

    @classmethod
    def product(cls, trained_classifier: bool) -> LossWeights:
        """The product presets' weights (patch term scale: mean squared distance in normalised
        units). The patch term asks every patch of x' to be one of the photo's with the label
        the guide gives it, which is what the critic (realism) and the mask network (the
        object where the guide is) ask too: measured on the sample scenes, both left guide
        IoU and coherence unchanged and cost most of the time, so they are off. The
        classifier's two terms are weighted as shares of the patch term's pull (`relative`,
        engine/term_balance.py), and off by default: with an untrained classifier random
        features carry no meaning and only added noise (docs/benchmarks.md); with a real one
        (EfficientNet-Lite0, ImageNet) they improved no edit consistently at a share of 0.1,
        made guide adherence worse from 0.5 on, and cost 2-9 times the time per iteration
        (docs/classifier-terms.md). `trained_classifier` still gates them for experiments that
        set the shares."""
        semantic = 1.0 if trained_classifier else 0.0
        return cls(classifier=PRODUCT_CLASS_SHARE * semantic,
                   feature_stats=PRODUCT_FEATURE_SHARE * semantic, mask=0.0, critic=0.0,
                   tv_l1=0.0, tv_l2=0.0, l2=0.0, keep=0.0, patch=1.0, relative=True,
                   smoothing=PRODUCT_SMOOTHING)

    def shares(self) -> dict[str, float]:
        return {"classifier": self.classifier, "feature_stats": self.feature_stats}


# The product presets' judged terms, as shares of the patch term's gradient norm: off, chosen from
# measurements with EfficientNet-Lite0 on the sample scenes (docs/classifier-terms.md)
PRODUCT_CLASS_SHARE = 0.0
PRODUCT_FEATURE_SHARE = 0.0
PRODUCT_SMOOTHING = 0
