"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest
import torch
from installer_env import fake_repo

from magic_server.engine.resnet import untrained_resnet50
from magic_server.engine.synthesis import Engine
from magic_server.engines import build_engine


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The engine on the CPU with the untrained classifier (random weights), built as every
    caller builds one (magic_server/engines.py): what the engine tests run, fast and without
    weights files."""
    return build_engine("untrained", "cpu")


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    """A seeded untrained ResNet-50, for tests that build engines of their own (capture
    modes, determinism)."""
    torch.manual_seed(0)
    return untrained_resnet50()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A fake checkout of this project for the installer tests (installer_env.fake_repo)."""
    return fake_repo(tmp_path_factory.mktemp("repo"))
