"""Engine: owns the frozen classifier on a device and runs MAGIC edits (being written)."""

from __future__ import annotations

import threading

import numpy as np
import torch

from magic_server.engine.api import ProgressCallback, SynthesisOptions, SynthesisResult


class Engine:
    def __init__(self, classifier: torch.nn.Module, device: torch.device | str = "cpu",
                 weights_label: str = "untrained") -> None:
        self.classifier = classifier
        self.device = torch.device(device)
        self.weights_label = weights_label

    def describe(self) -> dict:
        """Capabilities for handshakes and logs: device, GPU name/memory, weights."""
        raise NotImplementedError

    def warm_up(self) -> None:
        raise NotImplementedError

    def synthesize(self, image: np.ndarray, source_mask: np.ndarray, guide_mask: np.ndarray,
                   options: SynthesisOptions, on_progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None) -> SynthesisResult:
        raise NotImplementedError
