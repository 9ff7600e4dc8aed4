# Python 2.7 compatible (GIMP 2.10): standard library only.
"""What the plug-in remembers of its last run on an image: every argument, layers included.

GIMP 3.0 cannot serialize layer arguments between runs: its dialog comes back with empty layer
pickers and Filters > Repeat runs with none, and it keeps no values of a run that failed. So the
plug-in stores its own copy on the image (a parasite that is neither persistent nor undoable: no
undo step, the image does not become dirty): per procedure, the plain values and, per layer
argument, the layer's id and name (the id finds it again in this session, the name after a
layer was replaced by one of the same name), and the same for the photo the run worked on
(under PHOTO).

Python 2.7 + 3 common subset, standard library only; the GIMP side lives in magic_gimp3.py.
"""

import json

PARASITE_NAME = "magic-gimp-last-run"
VERSION = 1
# The photo a run worked on, kept beside the layer arguments (no argument has this name).
PHOTO = "photo"
# On each layer (and group) MAGIC adds: its results and label maps (see magic_gimp3.rerun_photo).
MADE_PARASITE = "magic-gimp-made"


def decode(data):
    """The stored dict, or {} for anything unreadable (an old or foreign parasite)."""
    try:
        store = json.loads(bytes(bytearray(data)).decode("utf-8"))
    except (ValueError, TypeError, UnicodeDecodeError):
        return {}
    if not isinstance(store, dict) or store.get("version") != VERSION:
        return {}
    procs = store.get("procedures")
    return {"version": VERSION, "procedures": procs if isinstance(procs, dict) else {}}


def encode(store):
    return json.dumps(store, sort_keys=True).encode("utf-8")


def remember(store, procedure, values, layers):
    """A new store with this run's arguments: values {name: plain value}, layers {name:
    (id, name) or None}."""
    out = {"version": VERSION, "procedures": dict((store or {}).get("procedures") or {})}
    entry = {"values": dict(values),
             "layers": {k: None if v is None else {"id": int(v[0]), "name": v[1]}
                        for k, v in layers.items()}}
    out["procedures"][procedure] = entry
    return out


def suggest_layers(store, procedure, layers):
    """A new store in which the procedure's next dialog offers these layers ({name: (id, name)}),
    its other remembered arguments kept: e.g. a new label map's two layers for the layout edit."""
    found = recall(store, procedure)
    values, known = found if found is not None else ({}, {})
    known = dict(known)
    known.update(layers)
    return remember(store, procedure, values, known)


def recall(store, procedure):
    """(values, layers) stored for the procedure, or None. layers: {name: (id, name) or None}."""
    entry = ((store or {}).get("procedures") or {}).get(procedure)
    if not isinstance(entry, dict):
        return None
    values = entry.get("values") if isinstance(entry.get("values"), dict) else {}
    layers = {}
    for k, v in (entry.get("layers") or {}).items():
        if isinstance(v, dict) and "id" in v:
            layers[k] = (v.get("id"), v.get("name"))
        else:
            layers[k] = None
    return values, layers
