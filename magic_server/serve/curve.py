"""CurveZMQ for remote use: key generation (`magic-server --keygen`), server keys, and the
ZAP authenticator that lets only listed client public keys in.

Keys folder layout (default ~/.config/magic-gimp/keys, or $XDG_CONFIG_HOME/magic-gimp/keys):
  server.key, server.key_secret          the server's key pair (server.key goes to clients)
  client.key, client.key_secret          a client key pair (copy both, plus server.key, to the
                                         client machine, for magic-edit --server)
  authorized_clients/*.key               public keys allowed to connect
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
from zmq.auth import create_certificates, load_certificate
from zmq.auth.thread import ThreadAuthenticator

AUTHORIZED_DIR = "authorized_clients"


class CurveSetupError(Exception):
    """User-facing configuration problem (one line, with the fix)."""


def default_keys_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "magic-gimp" / "keys"


def keygen(keys_dir: Path) -> list[Path]:
    """Create the server and one client key pair and authorise the client. Never overwrites."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    existing = [p for p in ("server.key_secret", "client.key_secret") if (keys_dir / p).exists()]
    if existing:
        raise CurveSetupError(f"keys already exist in {keys_dir} ({', '.join(existing)}); "
                              "remove them or pass --keys OTHER_FOLDER")
    made = []
    for name in ("server", "client"):
        public, secret = create_certificates(str(keys_dir), name)
        os.chmod(secret, 0o600)
        made += [Path(public), Path(secret)]
    allowed = keys_dir / AUTHORIZED_DIR
    allowed.mkdir(exist_ok=True)
    shutil.copy(keys_dir / "client.key", allowed / "client.key")
    made.append(allowed / "client.key")
    return made


@dataclass
class CurveConfig:
    keys_dir: Path

    def server_keys(self) -> tuple[bytes, bytes]:
        path = self.keys_dir / "server.key_secret"
        if not path.is_file():
            raise CurveSetupError(f"no server key in {self.keys_dir}; run `magic-server --keygen"
                                  f" --keys {self.keys_dir}` first")
        public, secret = load_certificate(str(path))
        if secret is None:
            raise CurveSetupError(f"{path} holds no secret key; run magic-server --keygen again")
        return public, secret

    def authorized_dir(self) -> Path:
        d = self.keys_dir / AUTHORIZED_DIR
        if not d.is_dir() or not any(d.glob("*.key")):
            raise CurveSetupError(f"no allowed client keys in {d}; run `magic-server --keygen "
                                  f"--keys {self.keys_dir}` or copy clients' .key files there")
        return d

    def apply(self, ctx: zmq.Context, sock: zmq.Socket) -> ThreadAuthenticator:
        """Make `sock` a CURVE server that admits only the authorised client keys."""
        public, secret = self.server_keys()
        allowed = self.authorized_dir()
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(allowed))
        sock.curve_server = True
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        return auth


def is_local_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc://, and for tcp:// on a loopback address."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = urlsplit(f"tcp://{rest}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names, host names: possibly reachable from outside
