"""MAGIC for GIMP plug-in: shared pure-Python parts (Python 2.7 and 3) and the two GIMP entry files."""
