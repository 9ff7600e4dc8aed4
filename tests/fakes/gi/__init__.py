"""Fake of PyGObject's `gi` for the plug-in's unit tests: just enough of GIMP 3's API.

Inside fakes.gimp3.installed() it is `gi` (and fakes.gi.repository `gi.repository`): `from
gi.repository import Gimp, Gegl, GLib, GObject` gives the fakes in fakes/gimp3.py.
"""

VERSIONS = {}


def require_version(namespace, version):
    VERSIONS[namespace] = version
