from fakes.gimp3 import Gegl, Gimp, GLib, GObject  # noqa: F401
