"""Where the classifier weights live, and how they get there.

Download with resume (`.part` file + HTTP Range), retries with backoff, a size check, a structure
check (a ResNet-50 state dict, via magic_server.weights.checkpoints.load_state_dict), a SHA-256 recorded at
the first verified download and checked on every later one, then conversion to safetensors.

Importing this module needs only the standard library (its error: weights/errors.py); torch is
imported when a file is checked.
The record `weights.json` in the cache folder says what is installed:
  {"file": "<name>.safetensors", "size": N, "sha256": "<of the safetensors file>",
   "source": "<url or file path>", "source_sha256": "<of the downloaded checkpoint>",
   "known_sha256": {"<url>": "<sha256 of the checkpoint first downloaded from it>"}}
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import platform
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from magic_server.weights.errors import WeightsError

DEFAULT_WEIGHTS_URL = (
    "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/resnet50_l2_eps0.05.ckpt"
)
WEIGHTS_LABEL = "quasi-robust ResNet-50 (l2, eps 0.05)"
WEIGHTS_FILE = "resnet50_l2_eps0.05.safetensors"
RECORD_FILE = "weights.json"
# The published file's size is not pinned here; this is only for "how much will it download".
ESTIMATED_DOWNLOAD_MB = 200

Progress = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)
Validator = Callable[[Path], Mapping[str, object]]

_CHUNK = 1 << 20
_USER_AGENT = "magic-for-gimp-installer"


def default_cache_dir(
    system: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """The per-user cache folder; `MAGIC_CACHE_DIR` wins."""
    env = os.environ if env is None else env
    if env.get("MAGIC_CACHE_DIR"):
        return Path(env["MAGIC_CACHE_DIR"]).expanduser()
    system = system or platform.system()
    home = home or Path(env.get("HOME") or Path.home())
    if system == "Windows":
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "magic-gimp" / "Cache"
    if system == "Darwin":
        return home / "Library" / "Caches" / "magic-gimp"
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else home / ".cache") / "magic-gimp"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def read_record(cache_dir: Path) -> dict:
    try:
        data = json.loads((cache_dir / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(cache_dir: Path, record: dict) -> None:
    tmp = cache_dir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, cache_dir / RECORD_FILE)


def installed_weights_path(cache_dir: Path | None = None) -> Path | None:
    """The installed safetensors file if it is present and matches its recorded size and SHA-256."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    record = read_record(cache_dir)
    name = record.get("file")
    if not isinstance(name, str) or not name:
        return None
    path = cache_dir / name
    try:
        if path.stat().st_size != record.get("size"):
            return None
    except OSError:
        return None
    return path if sha256_file(path) == record.get("sha256") else None


def _default_validator(path: Path) -> Mapping[str, object]:
    from magic_server.weights.checkpoints import load_state_dict

    return load_state_dict(path)


# --- download -------------------------------------------------------------------------------


class _Fatal(Exception):
    """A download error that retrying cannot fix (HTTP 404, 403...)."""


class _Restart(Exception):
    """The partial file cannot be continued: start again from byte 0."""


def _total_from_content_range(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _fetch_once(
    url: str, part: Path, timeout: float, progress: Progress | None
) -> int | None:
    """Append to `part` from its current size. Returns the total size if the server said it."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        req = urllib.request.Request(url, headers=headers)
        resp = urllib.request.urlopen(req, timeout=timeout)
    except ValueError as e:  # not a URL urllib can fetch
        raise _Fatal(str(e)) from None
    except urllib.error.HTTPError as e:
        if e.code == 416:  # nothing left to send: complete, or the file on the server shrank
            total = _total_from_content_range(e.headers.get("Content-Range"))
            if total is not None and total == offset:
                return total
            raise _Restart() from None
        if e.code in (408, 429) or e.code >= 500:
            raise  # worth retrying
        raise _Fatal(f"HTTP {e.code} {e.reason}") from None
    with resp:
        if offset and resp.status == 206:
            m = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise _Restart()
            total = _total_from_content_range(resp.headers.get("Content-Range"))
            mode = "ab"
        else:  # a full answer: the server ignored Range, or there was nothing to resume
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        done = offset
        with open(part, mode) as f:
            while True:
                block = resp.read(_CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")
    return total


def _download(
    url: str, part: Path, *, retries: int, backoff: float, timeout: float,
    progress: Progress | None, sleep: Callable[[float], None],
) -> None:
    """Fetch url into part, resuming; raises the project's WeightsError with the fix."""
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            total = _fetch_once(url, part, timeout, progress)
        except _Fatal as e:
            raise WeightsError(
                f"cannot download the weights from {url}: {e}. Check the URL, or install from a "
                "local file: magic-installer weights --file resnet50_l2_eps0.05.ckpt"
            ) from None
        except _Restart:
            part.unlink(missing_ok=True)
            failures += 1
            reason = "the server cannot continue the partial download"
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            grew = part.exists() and part.stat().st_size > before
            failures = 0 if grew else failures + 1
            reason = _describe(e, timeout)
        else:
            size = part.stat().st_size
            if total is not None and size > total:
                part.unlink()
                failures += 1
                reason = f"the partial file is larger ({size}) than the file on the server ({total})"
            else:
                return
        if failures > retries:
            raise WeightsError(
                f"cannot download the weights from {url}: {reason} (tried {retries + 1} times). "
                "Check your network and run the same command again: it resumes where it stopped."
            )
        sleep(min(backoff * 2 ** max(failures - 1, 0), 60.0))


def _short(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", e)
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return f"no data for {timeout:g} s (timed out)"
    return str(reason) or type(reason).__name__


# --- verification and conversion -------------------------------------------------------------


def _check_and_convert(
    ckpt: Path, cache_dir: Path, source: str, validate: Validator, expected_sha: str | None
) -> Path:
    """Verify `ckpt` (SHA-256 if one is expected, then structure), write the safetensors file and
    the record. Raises ValueError (corrupt file) with the reason."""
    digest = sha256_file(ckpt)
    if expected_sha and digest != expected_sha:
        raise ValueError(
            f"SHA-256 {digest[:12]}... differs from the one recorded at the first download "
            f"({expected_sha[:12]}...)"
        )
    try:
        state = validate(ckpt)
    except Exception as e:  # noqa: BLE001 - any parse failure of a damaged file lands here
        raise ValueError(f"not a valid ResNet-50 checkpoint ({_short(e)})") from None
    target = cache_dir / WEIGHTS_FILE
    _save_safetensors(state, target, {"source": source, "source_sha256": digest})
    record = read_record(cache_dir)
    known = record.get("known_sha256") if isinstance(record.get("known_sha256"), dict) else {}
    if source.startswith(("http://", "https://")):
        known.setdefault(source, digest)
    record.update(
        file=target.name, size=target.stat().st_size, sha256=sha256_file(target),
        source=source, source_sha256=digest, known_sha256=known,
    )
    _write_record(cache_dir, record)
    return target


def _save_safetensors(state: Mapping[str, object], target: Path, meta: dict[str, str]) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()
               if isinstance(v, torch.Tensor)}
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, target)


def download_weights(
    url: str | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    *,
    validate: Validator | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download, verify and convert the weights; return the safetensors path.

    Already installed weights are reused (from the same URL, or any source when url is None).
    A file that fails verification is deleted and downloaded once more before giving up.
    """
    source = url or DEFAULT_WEIGHTS_URL
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    installed = installed_weights_path(cache_dir)
    if installed and (url is None or read_record(cache_dir).get("source") == url):
        return installed
    validate = validate or _default_validator
    name = source.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "weights.ckpt"
    part = cache_dir / (name + ".part")
    _claim_part(part, source)
    expected = read_record(cache_dir).get("known_sha256", {}).get(source)
    problem = ""
    for _attempt in range(2):
        _download(url=source, part=part, retries=retries, backoff=backoff, timeout=timeout,
                  progress=progress, sleep=sleep)
        try:
            target = _check_and_convert(part, cache_dir, source, validate, expected)
        except ValueError as e:
            problem = str(e)
            part.unlink(missing_ok=True)
            print(f"downloaded file is damaged: {problem}; downloading it again", file=sys.stderr)
            continue
        part.unlink(missing_ok=True)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        return target
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    raise WeightsError(
        f"the file downloaded from {source} is damaged twice in a row: {problem}. "
        "Try again later, or install from a file: magic-installer weights --file FILE"
    )


def _claim_part(part: Path, source: str) -> None:
    """A `.part` left by a download from another URL is not resumed."""
    marker = part.with_name(part.name + ".json")
    try:
        previous = json.loads(marker.read_text(encoding="utf-8")).get("url")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != source:
        part.unlink(missing_ok=True)
        marker.write_text(json.dumps({"url": source}) + "\n", encoding="utf-8")


def install_weights_file(
    src: Path | str, cache_dir: Path | None = None, *, validate: Validator | None = None
) -> Path:
    """Offline install from a local checkpoint (robustness-style .ckpt, .pth or .safetensors)."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise WeightsError(f"weights file not found: {src}. Give the path of the downloaded "
                             "resnet50_l2_eps0.05.ckpt")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    record = read_record(cache_dir)
    installed = installed_weights_path(cache_dir)
    digest = sha256_file(src)
    if installed and record.get("source_sha256") == digest:
        return installed
    try:
        return _check_and_convert(src, cache_dir, str(src.resolve()),
                                  validate or _default_validator, None)
    except ValueError as e:
        raise WeightsError(f"{src} cannot be used: {e}. Download the file again") from None


def remove_weights(cache_dir: Path | None = None) -> list[Path]:
    """Delete the installed weights, partial downloads and the record; return what was removed."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    removed = []
    for p in [cache_dir / WEIGHTS_FILE, cache_dir / RECORD_FILE, *cache_dir.glob("*.part"),
              *cache_dir.glob("*.part.json")]:
        if p.exists():
            p.unlink()
            removed.append(p)
    return removed


def remote_size(url: str, timeout: float = 10.0) -> int | None:
    """Content-Length of url from a HEAD request, or None if it cannot be had."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return int(length) if length and length.isdigit() else None


def download_progress() -> DownloadBar:
    """The progress bar magic-edit, magic-server and make sample show while the classifier
    weights download."""
    return DownloadBar("classifier weights")


class DownloadBar:
    """A one-line progress bar with speed: redrawn in place on a terminal (at most 5 times a
    second), one line per 10% in logs and pipes."""

    def __init__(self, label: str = "weights", stream=None, clock=time.monotonic,
                 tty: bool | None = None) -> None:
        self.label, self.stream, self.clock = label, stream or sys.stderr, clock
        isatty = getattr(self.stream, "isatty", None)
        self.tty = tty if tty is not None else bool(isatty and isatty())
        self._start: float | None = None
        self._first = 0
        self._last_draw = float("-inf")
        self._next_log = 0.0
        self.line = ""

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self._start is None:
            self._start, self._first = now, done
        finished = total is not None and done >= total
        frac = min(done / total, 1.0) if total else 0.0
        if self.tty:
            if not finished and now - self._last_draw < 0.2:
                return
        elif not finished and (not total or frac < self._next_log):
            return
        self._last_draw = now
        self._next_log = frac + 0.1
        elapsed = max(now - self._start, 1e-6)
        speed = (done - self._first) / elapsed
        mb = done / 1e6
        if total:
            bar = "#" * int(frac * 24)
            eta = (total - done) / speed if speed > 0 else 0
            self.line = (f"{self.label}: {frac * 100:5.1f}% [{bar:<24}] {mb:.1f}/{total / 1e6:.1f} MB"
                         f"  {speed / 1e6:.1f} MB/s  ETA {eta:.0f}s")
        else:
            self.line = f"{self.label}: {mb:.1f} MB  {speed / 1e6:.1f} MB/s"
        if self.tty:
            self.stream.write("\r" + self.line + ("\n" if finished else ""))
        else:
            self.stream.write(self.line + "\n")
        self.stream.flush()
