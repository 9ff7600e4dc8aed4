"""weights/store.py against a local HTTP server: resume, retries, verification, records, errors.

Payloads are small torch files; the structure check is injected (a ResNet-50 one is exercised in
test_weights_store_real.py)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import torch
from http_fixture import FileServer, Route
from safetensors.torch import load_file

from magic_server.weights import store as ws
from magic_server.weights.errors import WeightsError


def payload(seed: int, n: int = 4000) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.randn(n, generator=torch.Generator().manual_seed(seed))}},
               buf)
    return buf.getvalue()


def small_validator(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    if set(state) != {"w"} or state["w"].shape != (4000,):
        raise WeightsError("wrong tensors")
    return state


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def fetch(server: FileServer, cache: Path, path: str = "/w.ckpt", **kw) -> Path:
    kw.setdefault("validate", small_validator)
    kw.setdefault("backoff", 0.0)
    kw.setdefault("timeout", 5.0)
    return ws.download_weights(server.url(path), cache, **kw)


def test_download_verifies_converts_and_records(server, tmp_path):
    data = payload(1)
    server.routes["/w.ckpt"] = Route(data)
    seen = []
    out = fetch(server, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert out == tmp_path / ws.WEIGHTS_FILE
    assert torch.equal(load_file(out)["w"], torch.load(io.BytesIO(data))["model"]["w"])
    assert seen[-1] == (len(data), len(data))
    assert ws.installed_weights_path(tmp_path) == out
    record = ws.read_record(tmp_path)
    assert record["source"] == server.url("/w.ckpt")
    assert record["known_sha256"][server.url("/w.ckpt")] == record["source_sha256"]
    assert not list(tmp_path.glob("*.part*"))


def test_second_call_reuses_installed_file_without_network(server, tmp_path):
    server.routes["/w.ckpt"] = Route(payload(1))
    first = fetch(server, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert fetch(server, tmp_path) == first
    assert len(server.gets("/w.ckpt")) == 1 and first.stat().st_mtime_ns == mtime
    # url=None accepts whatever verified weights are installed (offline use by the classifier)
    assert ws.download_weights(None, tmp_path) == first


def test_cut_connection_resumes_with_range(server, tmp_path):
    data = payload(2)
    server.routes["/w.ckpt"] = Route(data, cut_after=[3000, 5000])
    sleeps = []
    out = fetch(server, tmp_path, sleep=sleeps.append)
    ranges = [h.range for h in server.gets("/w.ckpt")]
    assert ranges == [None, "bytes=3000-", "bytes=8000-"]
    assert [h.status for h in server.gets("/w.ckpt")] == [200, 206, 206]
    assert len(sleeps) == 2
    assert ws.read_record(tmp_path)["source_sha256"] == ws.hashlib.sha256(data).hexdigest()
    assert out.exists()


def test_interrupted_run_leaves_part_that_next_run_resumes(server, tmp_path):
    data = payload(3)
    # a cut with progress is retried at once; a cut without progress counts against `retries`
    server.routes["/w.ckpt"] = Route(data, cut_after=[3000, 0])
    with pytest.raises(WeightsError, match="run the same command again"):
        fetch(server, tmp_path, retries=0)
    part = tmp_path / "w.ckpt.part"
    assert part.stat().st_size == 3000
    fetch(server, tmp_path)
    assert server.gets("/w.ckpt")[-1].range == "bytes=3000-"
    assert ws.installed_weights_path(tmp_path) is not None


def test_part_from_another_url_is_not_resumed(server, tmp_path):
    server.routes["/w.ckpt"] = Route(payload(3))
    (tmp_path / "w.ckpt.part").write_bytes(b"x" * 100)
    (tmp_path / "w.ckpt.part.json").write_text('{"url": "http://elsewhere/w.ckpt"}')
    fetch(server, tmp_path)
    assert server.gets("/w.ckpt")[0].range is None


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = payload(4)
    server.routes["/w.ckpt"] = Route(data, cut_after=[3000], ignore_range=True)
    out = fetch(server, tmp_path)
    assert [h.status for h in server.gets("/w.ckpt")] == [200, 200]
    assert torch.equal(load_file(out)["w"], torch.load(io.BytesIO(data))["model"]["w"])


def test_part_longer_than_remote_file_is_restarted(server, tmp_path):
    data = payload(4)
    server.routes["/w.ckpt"] = Route(data)
    fetch(server, tmp_path, retries=0)  # claim the .part for this URL
    ws.remove_weights(tmp_path)
    (tmp_path / "w.ckpt.part").write_bytes(data + b"junk")
    (tmp_path / "w.ckpt.part.json").write_text(f'{{"url": "{server.url("/w.ckpt")}"}}')
    fetch(server, tmp_path)
    assert [h.status for h in server.gets("/w.ckpt")][-2:] == [416, 200]


def test_complete_part_from_an_interrupted_run_is_verified_without_refetching(server, tmp_path):
    data = payload(4)
    server.routes["/w.ckpt"] = Route(data)
    (tmp_path / "w.ckpt.part").write_bytes(data)  # downloaded, then the process was killed
    (tmp_path / "w.ckpt.part.json").write_text(f'{{"url": "{server.url("/w.ckpt")}"}}')
    fetch(server, tmp_path)
    assert [(h.range, h.status) for h in server.gets("/w.ckpt")] == [
        (f"bytes={len(data)}-", 416)]
    assert ws.installed_weights_path(tmp_path) is not None


def test_corrupt_download_is_detected_and_downloaded_again(server, tmp_path, capsys):
    data = payload(5)
    garbage = bytes(range(256)) * (len(data) // 256) + b"\0" * (len(data) % 256)
    server.routes["/w.ckpt"] = Route(data, bodies=[garbage])
    out = fetch(server, tmp_path)
    assert len(server.gets("/w.ckpt")) == 2
    assert "damaged" in capsys.readouterr().err
    assert torch.equal(load_file(out)["w"], torch.load(io.BytesIO(data))["model"]["w"])


def test_corrupt_twice_gives_clear_error_and_leaves_nothing(server, tmp_path):
    server.routes["/w.ckpt"] = Route(b"<html>not a checkpoint</html>")
    with pytest.raises(WeightsError, match="damaged twice.*--file"):
        fetch(server, tmp_path)
    assert ws.installed_weights_path(tmp_path) is None
    assert not list(tmp_path.glob("*.part"))


def test_sha256_recorded_at_first_download_is_checked_later(server, tmp_path):
    server.routes["/w.ckpt"] = Route(payload(6))
    out = fetch(server, tmp_path)
    out.unlink()  # the weights are lost, the record of the first download stays
    server.routes["/w.ckpt"] = Route(payload(7))  # same structure, different bytes
    with pytest.raises(WeightsError, match="SHA-256"):
        fetch(server, tmp_path)
    server.routes["/w.ckpt"] = Route(payload(6))
    assert fetch(server, tmp_path) == out


def test_tampered_safetensors_is_not_reported_installed(server, tmp_path):
    server.routes["/w.ckpt"] = Route(payload(8))
    out = fetch(server, tmp_path)
    raw = bytearray(out.read_bytes())
    raw[-10] ^= 0xFF
    out.write_bytes(bytes(raw))
    assert ws.installed_weights_path(tmp_path) is None
    fetch(server, tmp_path)  # and a new call repairs it
    assert ws.installed_weights_path(tmp_path) == out


def test_404_is_one_clear_error_without_retries(server, tmp_path):
    with pytest.raises(WeightsError, match=r"HTTP 404.*weights --file") as e:
        fetch(server, tmp_path, path="/missing.ckpt")
    assert "\n" not in str(e.value)
    assert len(server.gets("/missing.ckpt")) == 1


def test_timeout_is_retried_then_reported(server, tmp_path):
    server.routes["/w.ckpt"] = Route(payload(9), stall_s=1.0)
    sleeps = []
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match=r"timed out.*tried 2 times"):
        fetch(server, tmp_path, timeout=0.2, retries=1, backoff=0.5, sleep=sleeps.append)
    assert time.monotonic() - t0 < 3
    assert sleeps == [0.5]


def test_server_errors_back_off_exponentially(server, tmp_path):
    server.routes["/w.ckpt"] = Route(b"", status=503)
    sleeps = []
    with pytest.raises(WeightsError, match="HTTP 503"):
        fetch(server, tmp_path, retries=3, backoff=1.0, sleep=sleeps.append)
    assert sleeps == [1.0, 2.0, 4.0]


def test_unreachable_host_message(tmp_path):
    with pytest.raises(WeightsError, match="refused|network"):
        ws.download_weights("http://127.0.0.1:9/w.ckpt", tmp_path, validate=small_validator,
                            retries=0)


def test_install_from_local_file_and_errors(tmp_path):
    src = tmp_path / "w.ckpt"
    src.write_bytes(payload(10))
    cache = tmp_path / "cache"
    out = ws.install_weights_file(src, cache, validate=small_validator)
    assert ws.installed_weights_path(cache) == out
    assert ws.read_record(cache)["source"] == str(src.resolve())
    mtime = out.stat().st_mtime_ns
    assert ws.install_weights_file(src, cache, validate=small_validator).stat().st_mtime_ns == mtime
    with pytest.raises(WeightsError, match="not found"):
        ws.install_weights_file(tmp_path / "nope.ckpt", cache)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="cannot be used"):
        ws.install_weights_file(bad, cache, validate=small_validator)
    assert ws.installed_weights_path(cache) == out  # a failed install keeps the good weights


def test_default_cache_dir_per_platform(tmp_path):
    home = tmp_path
    assert ws.default_cache_dir("Linux", {}, home) == home / ".cache" / "magic-gimp"
    assert ws.default_cache_dir("Linux", {"XDG_CACHE_HOME": "/x"}, home) == Path("/x/magic-gimp")
    assert ws.default_cache_dir("Darwin", {}, home) == home / "Library/Caches/magic-gimp"
    win = ws.default_cache_dir("Windows", {"LOCALAPPDATA": "C:/Users/a/AppData/Local"}, home)
    assert win == Path("C:/Users/a/AppData/Local/magic-gimp/Cache")
    assert ws.default_cache_dir("Linux", {"MAGIC_CACHE_DIR": "/c"}, home) == Path("/c")


def test_progress_bar_shows_percent_and_speed():
    out = io.StringIO()
    clock = iter([0.0, 1.0, 2.0])
    bar = ws.DownloadBar("weights", out, clock=lambda: next(clock), tty=True)
    bar(0, 4_000_000)
    bar(2_000_000, 4_000_000)
    bar(4_000_000, 4_000_000)
    lines = out.getvalue().split("\r")
    assert " 50.0%" in lines[2] and "2.0 MB/s" in lines[2] and "ETA 1s" in lines[2]
    assert "100.0%" in lines[3] and lines[3].endswith("\n")


def test_progress_bar_in_a_log_prints_a_line_per_ten_percent():
    out = io.StringIO()
    t = iter(range(1000))
    bar = ws.DownloadBar("weights", out, clock=lambda: float(next(t)))
    for done in range(0, 1_000_001, 10_000):
        bar(done, 1_000_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("weights: 100.0%")


def test_the_store_and_its_error_import_without_torch(tmp_path):
    """The installer runs where torch may not be: the store, its error and the installer's
    command line import with torch unimportable, and a missing file is the store's own error."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from magic_server.weights import store\n"
            "from magic_server.weights.errors import WeightsError\n"
            "import installer.cli\n"
            "try:\n"
            f"    store.install_weights_file({str(tmp_path / 'none.ckpt')!r})\n"
            "except WeightsError as e:\n"
            "    print('refused:', e)\n"
            "assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[1], check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: weights file not found"), out.stdout
