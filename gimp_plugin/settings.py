# ruff: noqa: UP024, UP031, UP036, TRY004, SIM115  (Python 2.7 compatible: GIMP 2.10)
"""Plug-in configuration (magic_gimp.json next to the entry file) and starting the server.

Python 2.7 + 3 common subset, standard library only.
magic_gimp.json = {"server_address": "tcp://...", "server_command": [argv] or null,
                   "python": "/path/to/python3" (optional, GIMP 2.10 bridge only)}
"""

import json
import os
import subprocess
import sys
import tempfile

CONFIG_FILE = "magic_gimp.json"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5591"  # = magic_protocol.protocol.DEFAULT_ADDRESS
LOG_NAME = "magic-server-autostart.log"

try:
    _TEXT = (str, unicode)  # Python 2
except NameError:
    _TEXT = (str,)


def load_config(folder):
    """The installed configuration, or defaults when there is none. A broken file is an error
    the artist can fix, so it is reported rather than silently ignored."""
    path = os.path.join(folder, CONFIG_FILE)
    config = {"server_address": DEFAULT_ADDRESS, "server_command": None, "python": None}
    if not os.path.exists(path):
        return config
    try:
        with open(path) as f:
            loaded = json.load(f)
    except (IOError, OSError, ValueError) as exc:
        raise ValueError("cannot read %s (%s): fix it or run magic-installer again" % (path, exc))
    if not isinstance(loaded, dict):
        raise ValueError("%s must hold a JSON object: run magic-installer again" % path)
    command = loaded.get("server_command")
    if command is not None and not (isinstance(command, list) and command
                                    and all(isinstance(c, _TEXT) for c in command)):
        raise ValueError("%s: server_command must be a list of strings or null" % path)
    config.update(loaded)
    if not config.get("server_address"):
        config["server_address"] = DEFAULT_ADDRESS
    return config


CURVE_FIELDS = ("server_public_key", "client_public_key", "client_secret_key", "client_keys")
FIELD_OPTIONS = {"server-key": "server_public_key", "client-keys": "client_keys"}


def split_server_field(text):
    """The dialog's server field: `ADDRESS [server-key=KEY|FILE] [client-keys=FILE]`.
    Returns (address or "", {config key: value}). Unknown words are an error."""
    address, options = "", {}
    for word in (text or "").split():
        name, sep, value = word.partition("=")
        if sep and name in FIELD_OPTIONS:
            options[FIELD_OPTIONS[name]] = value
        elif not address and "://" in word:
            address = word
        else:
            raise ValueError("cannot read the server field %r: write ADDRESS [server-key=KEY|FILE] "
                             "[client-keys=FILE]" % text)
    return address, options


def resolve_address(argument, config):
    address = split_server_field(argument)[0]
    return address or config.get("server_address") or DEFAULT_ADDRESS


def curve_options(argument, config):
    """CurveZMQ settings for this run: magic_gimp.json's (server_public_key, client_public_key,
    client_secret_key or client_keys), overridden by the server field's. {} = no CurveZMQ."""
    options = {k: config.get(k) for k in CURVE_FIELDS if config.get(k)}
    field_address, field = split_server_field(argument)
    if field_address and field_address != config.get("server_address") and "server_public_key" \
            not in field:
        # another server named in the dialog: the installed server key is not its key
        options.pop("server_public_key", None)
    options.update(field)
    if field.get("client_keys"):
        options.pop("client_public_key", None)
        options.pop("client_secret_key", None)
    return options if options.get("server_public_key") else {}


def log_path():
    return os.path.join(tempfile.gettempdir(), LOG_NAME)


def start_server(command, log_file=None):
    """Start the server detached from GIMP (it outlives this plug-in run, so the next run does
    not pay for loading the model again). Its output goes to a log file. Returns the Popen."""
    log_file = log_file or log_path()
    log = open(log_file, "ab")
    kwargs = {"stdin": subprocess.PIPE, "stdout": log, "stderr": subprocess.STDOUT,
              "close_fds": True}
    if sys.platform == "win32":
        kwargs["creationflags"] = 0x00000200 | 0x08000000  # new process group, no window
    elif sys.version_info[0] >= 3:
        kwargs["start_new_session"] = True
    else:
        kwargs["preexec_fn"] = os.setsid  # Python 2 (GIMP 2.10) has no start_new_session
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # GIMP's plug-in path must not leak into the server's Python
    env.pop("PYTHONHOME", None)
    try:
        proc = subprocess.Popen(list(command), env=env, **kwargs)
    finally:
        log.close()
    proc.stdin.close()
    return proc


def log_tail(log_file=None, lines=3):
    try:
        with open(log_file or log_path(), "rb") as f:
            text = f.read()[-4000:].decode("utf-8", "replace")
    except (IOError, OSError):
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def log_size(log_file=None):
    """The log's size now: what a server started next writes comes after it."""
    try:
        return os.path.getsize(log_file or log_path())
    except (IOError, OSError):
        return 0


def log_since(offset, log_file=None, limit=20000):
    """The log's lines written after `offset` (the last `limit` characters of them)."""
    try:
        with open(log_file or log_path(), "rb") as f:
            f.seek(offset)
            text = f.read()[-limit:].decode("utf-8", "replace")
    except (IOError, OSError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def server_said(lines):
    """The server's own one-line reason for stopping ("magic-server: ..."), or None."""
    for line in reversed(lines):
        if line.startswith("magic-server: "):
            return line[len("magic-server: "):]
    return None
