"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest

from magic_server.engine.resnet import untrained_resnet50
from magic_server.engine.synthesis import Engine
from magic_server.weights.classifier import UNTRAINED_LABEL


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The engine on the CPU with the untrained classifier (random weights): what the
    engine tests run, fast and without weights files."""
    return Engine(untrained_resnet50(), "cpu", UNTRAINED_LABEL)
