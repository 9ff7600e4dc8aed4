"""The weights' error and the help line that names the ways to get weights: torch-free, so that
the installer can use the store (weights/store.py) without torch."""

from __future__ import annotations

MISSING_WEIGHTS_HELP = (
    "install the classifier weights with `magic-installer weights`, pass a checkpoint with "
    "--weights FILE, or run without them (poor results) with --weights untrained"
)


class WeightsError(Exception):
    """Weights that cannot be found, read or used. The message is meant for the user."""
