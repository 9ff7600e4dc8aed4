"""The artist's session in a REAL GIMP 3 window (GUI binary under Xvfb, in the trixie chroot),
driven with xdotool through Filters > MAGIC and the plug-in's dialogs, against a real magic-server
(CPU, untrained weights). Every check reads GIMP's own state of the image (gui_batch.py dumps
the layer tree, the selected layers and whether undo is enabled on request) or the server's.

Usage (run.sh calls it as root, with the chroot's proc/sys/dev mounted):
    python gui_test.py CHROOT WORK_DIR INSIDE_DIR [--shots DIR]
WORK_DIR is bind-mounted at INSIDE_DIR in the chroot. --shots also writes the dialog and result
screenshots for docs/ (small PNGs). Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from installer.plugin_install import install_plugins
from magic_protocol.client import MagicClient

DISPLAY = ":97"
SCREEN = (1600, 1000)
MAIN = (1400, 900)  # the image window, at (0, 0)
DIALOG = "MAGIC - Mask-guided synthesis"
LAYOUT_DIALOG = "MAGIC - Layout edit"
LABEL_MAP_DIALOG = "MAGIC - Label map"
GROUP = "MAGIC reshape draft"  # + " (seed N)": names carry mode, preset and seed
MOVE_DIALOG = "MAGIC - Move object"
MOVE_GROUP = "MAGIC move draft"
LONG_RUN = "MAGIC - long run"
NO_SERVER_LIMIT_S = 20.0
CANCEL_LIMIT_S = 2.0
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[gui {time.monotonic() - T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def ok(self, cond: bool, what: str) -> bool:
        if cond:
            self.passed += 1
            log(f"ok   {what}")
        else:
            self.failed.append(what)
            log(f"FAIL {what}")
        return cond


class Session:
    def __init__(self, root: Path, work: Path, inside: str) -> None:
        self.root, self.work, self.inside = root, work, inside
        self.procs: list[subprocess.Popen] = []
        self.n = 0

    # -- processes -------------------------------------------------------------------
    def env_argv(self, *argv: str) -> list[str]:
        return ["chroot", str(self.root), "/usr/bin/env", "-i", f"DISPLAY={DISPLAY}",
                f"HOME={self.inside}/home", "LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin",
                "TMPDIR=/tmp", "NO_AT_BRIDGE=1", *argv]

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        out = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(self.env_argv(*argv), stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)

    def x(self, *argv: str, check: bool = False) -> str:
        r = subprocess.run(self.env_argv(*argv), capture_output=True, text=True, timeout=30,
                           check=False)
        if check and r.returncode != 0:
            raise RuntimeError(f"{argv}: {r.stderr.strip()}")
        return r.stdout.strip()

    def key(self, *keys: str, window: str | None = None) -> None:
        pre = ["windowactivate", "--sync", window] if window else []
        self.x("xdotool", *pre, "key", "--delay", "150", *keys)
        time.sleep(0.2)

    def windows(self, name: str) -> list[str]:
        return self.x("xdotool", "search", "--onlyvisible", "--name", name).split()

    def wait_window(self, name: str, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.windows(name)
            if found:
                return found[0]
            time.sleep(0.2)
        return None

    def wait_gone(self, name: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.windows(name):
                return True
            time.sleep(0.2)
        return False

    def shot(self, name: str) -> Path:
        self.x("import", "-window", "root", f"{self.inside}/{name}.png")
        return self.work / f"{name}.png"

    # -- GIMP's state of the image ----------------------------------------------------
    def state(self, timeout: float = 20.0) -> dict:
        self.n += 1
        name = f"r{self.n:03d}"
        (self.work / "requests" / name).write_text("")
        path = self.work / "state" / f"{name}.json"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if path.exists():
                return json.loads(path.read_text())
            time.sleep(0.1)
        raise RuntimeError("GIMP did not answer a state request (is the batch loop alive?)")

    def wait_state(self, cond, timeout: float) -> dict:
        end = time.monotonic() + timeout
        st = self.state()
        while not cond(st) and time.monotonic() < end:
            time.sleep(0.5)
            st = self.state()
        return st


def groups(st: dict) -> list[str]:
    """Result groups, without their seeds: "MAGIC reshape draft (seed 5)" -> GROUP."""
    return plain([la["name"] for la in st["layers"] if la["group"]])


def group_layers(st: dict, group: str) -> list[dict]:
    """The groups named `group` (without seeds), top first."""
    return [la for la in st["layers"] if la["group"] and plain([la["name"]]) == [group]]


def children(st: dict, group: str) -> list[str]:
    return [la["name"] for la in st["layers"] if la["parent"] is not None
            and plain([la["parent"]]) == [group]]


def layer(st: dict, name: str) -> dict | None:
    return next((la for la in st["layers"] if la["name"] == name), None)


def top_level(st: dict) -> list[str]:
    return [la["name"] for la in st["layers"] if la["parent"] is None]


def plain(names: list[str]) -> list[str]:
    """Names without their seeds ("MAGIC reshape draft (seed 5)") and without the " #1" GIMP
    adds to a second layer of the same name."""
    return [n.split(" #")[0].split(" (")[0] for n in names]


def canvas(png: Path, bottom: int) -> np.ndarray:
    """The image window's canvas (the picture and around it, not the docks or status bar)."""
    im = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    return im[60:bottom - 40, 200:1100]


def changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a - b).max(axis=2) > 8).sum())


def summary(work: Path, procedure: str, start: int = 0) -> str | None:
    """The plug-in's dialog summary (what the run will use), as the dialog last showed it."""
    lines = (work / "gimp.log").read_text(errors="replace").splitlines()[start:]
    return next((ln for ln in reversed(lines)
                 if ln.startswith(f"MAGIC dialog summary {procedure}: ")), None)


def seed_of(name: str) -> int | None:
    m = re.search(r"\(seeds? (\d+)", name)
    return int(m.group(1)) if m else None


def result_boxes(st: dict) -> list[tuple[int, ...]]:
    """(width, height, x, y) of every result layer, as GIMP has them."""
    return sorted(tuple(la["box"]) for la in st["layers"]
                  if la["parent"] is not None and plain([la["parent"]]) == [GROUP])


def job_sizes(work: Path) -> list[str]:
    """The image size of each job the GUI's server accepted ("384x256"), from its log."""
    text = (work / "gui-server.log").read_text(errors="replace")
    return re.findall(r"job \w+ from client \S+: \w+ (\d+x\d+),", text)


def dialog_report(work: Path, procedure: str, start: int = 0) -> str | None:
    """The plug-in's report of what its real dialog shows (preset, samples, presets offered);
    printed when MAGIC_GIMP_PREVIEW=1, once the dialog is filled."""
    lines = (work / "gimp.log").read_text(errors="replace").splitlines()[start:]
    return next((ln for ln in reversed(lines) if ln.startswith(f"MAGIC dialog {procedure}:")),
                None)


def run_done(st: dict, group: str, groups_wanted: int, samples: int) -> bool:
    """A run's insert is complete: its group with all its samples, the photo selected again
    (GIMP's state is read while the plug-in may still be adding the layers)."""
    found = group_layers(st, group)
    return (len(found) == groups_wanted and st["selected"] == ["photo"]
            and len([la for la in st["layers"] if la["parent"] == found[0]["name"]]) == samples)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_inputs(work: Path) -> None:
    d = work / "inputs"
    d.mkdir(parents=True, exist_ok=True)
    size = (384, 256)
    Image.open(REPO / "samples/coffee.png").convert("RGB").resize(size, Image.LANCZOS).save(
        d / "photo.png")
    for name, out in (("source", "source.png"), ("move", "guide.png")):
        m = Image.open(REPO / f"samples/masks/coffee_{name}.png").convert("L")
        m.resize(size, Image.NEAREST).convert("RGB").save(d / out)


def server_running(client: MagicClient) -> str | None:
    running = client.status().get("running")
    return running.get("job") if isinstance(running, dict) else None


def small_png(src: Path, box: tuple[int, int, int, int], dst: Path, width: int) -> None:
    im = Image.open(src).convert("RGB").crop(box)
    h = round(im.height * width / im.width)
    im.resize((width, h), Image.LANCZOS).quantize(128).save(dst, optimize=True)


def status_bar(png: Path, bottom: int) -> np.ndarray:
    """The image window's status bar (pixels), to see that progress text appears there."""
    im = np.asarray(Image.open(png).convert("L"))
    return im[bottom - 28:bottom - 6, 200:1168].astype(np.int16)


def run_dialog(s: Session, ck: Checks, choose_layers: bool, iterations: int,
               samples: int | None = None) -> bool:
    """The dialog is open: optionally pick the layers, set the iterations (and samples)."""
    d = s.wait_window(DIALOG, 15)
    if not ck.ok(d is not None, f"the dialog '{DIALOG}' opens"):
        return False
    time.sleep(0.8)
    if choose_layers:
        for mnemonic, downs in (("alt+u", 2), ("alt+g", 1)):  # source, then guide
            s.key(mnemonic, window=d)  # the label's mnemonic clicks its Browse... button
            c = s.wait_window("Choose drawable", 8)
            if not ck.ok(c is not None, f"the layer chooser opens ({mnemonic})"):
                return False
            time.sleep(0.5)
            s.key("Tab", *["Down"] * downs, "Return", "alt+o")
            ck.ok(s.wait_gone("Choose drawable", 5), "the layer chooser closes with the choice")
    s.key("alt+i", "ctrl+a", window=d)
    s.x("xdotool", "type", "--delay", "60", str(iterations))
    s.key("Tab")
    if samples is not None:
        s.key("alt+p", "ctrl+a", window=d)
        s.x("xdotool", "type", "--delay", "60", str(samples))
        s.key("Tab")
    return True


def press_ok(s: Session) -> None:
    d = s.wait_window(DIALOG, 5)
    s.key("alt+o", window=d)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("inside")
    ap.add_argument("--shots", type=Path, default=None)
    a = ap.parse_args()
    work = a.work
    for sub in ("state", "requests"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    make_inputs(work)
    (work / "gui_batch.py").write_bytes((REPO / "tests/e2e/gui_batch.py").read_bytes())
    profile = work / "home/.config/GIMP/3.0"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "gimprc").write_text("(show-welcome-dialog no)\n")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    install_plugins(profile, address, None, gimp_version="3.0")
    (a.root / "tmp/.X11-unix").mkdir(parents=True, exist_ok=True)
    os.chmod(a.root / "tmp", 0o1777)
    os.chmod(a.root / "tmp/.X11-unix", 0o1777)

    server_log = open(work / "gui-server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "magic_server.server", "--bind", address,
         "--device", "cpu", "--weights", "untrained", "--resolution", "32"],
        stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT, cwd=REPO,
        start_new_session=True,  # its time estimates are kept in the test's own folder
        env={**os.environ, "MAGIC_CACHE_DIR": str(work / "server-cache")})
    s = Session(a.root, work, a.inside)
    ck = Checks()
    try:
        s.start("xvfb", "Xvfb", DISPLAY, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                "-nolisten", "tcp")
        time.sleep(1.5)
        s.start("openbox", "openbox")
        time.sleep(1.0)
        gimp = s.start("gimp", "env", "MAGIC_GIMP_PREVIEW=1", "gimp-3.0", "-n",
                       "--batch-interpreter=python-fu-eval", "-b",
                       f"GUI_DIR='{a.inside}'; exec(open(GUI_DIR + '/gui_batch.py').read())")
        end = time.monotonic() + 120
        while not (work / "state/ready.json").exists() and time.monotonic() < end:
            if gimp.poll() is not None:
                raise RuntimeError(f"GIMP exited ({gimp.returncode}); see gimp.log")
            time.sleep(0.3)
        if not (work / "state/ready.json").exists():
            raise RuntimeError("GIMP did not open the image within 120 s")
        with MagicClient(address, timeout_s=60) as probe:
            probe.handshake()
        log("GIMP, Xvfb and the server are up")
        time.sleep(1.5)
        for w in s.windows("Welcome to GIMP"):
            s.x("xdotool", "windowclose", w)
        main_win = s.wait_window(" – GIMP$|- GIMP$", 10)
        if main_win is None:
            raise RuntimeError("no GIMP image window")
        s.x("xdotool", "windowmove", main_win, "0", "0")
        s.x("xdotool", "windowsize", main_win, str(MAIN[0]), str(MAIN[1]))
        s.x("xdotool", "mousemove", str(SCREEN[0] - 1), str(SCREEN[1] - 1))
        time.sleep(1.0)
        bottom = window_box(s, main_win)[3]  # the status bar is the window's last row
        before = s.state()
        ck.ok(before["selected"] == ["photo"] and before["undo_enabled"], "the photo is selected")
        idle_bar = status_bar(s.shot("idle"), bottom)

        # 1. Filters > MAGIC > Mask-guided synthesis..., pick the layers, OK
        s.key("alt+r", "Up", "Right", "s", window=main_win)
        if not run_dialog(s, ck, choose_layers=True, iterations=20):
            raise RuntimeError("the dialog could not be driven")
        shown = dialog_report(work, "python-fu-magic-synthesize")
        ck.ok(shown is not None and '{"preset": "draft", "samples": 1}' in shown,
              f"the first dialog starts with the CPU server's defaults, draft and one sample "
              f"({shown})")
        ck.ok(shown is not None and shown.endswith('presets offered: ["quality", "draft", '
                                                   '"paper"]'),
              "the dialog's preset box offers no test-only preset (tiny)")
        if a.shots:
            x0, y0, x1, y1 = window_box(s, s.wait_window(DIALOG, 2))
            small_png(s.shot("dialog"), (x0, y0 - 20, x1, y1), a.shots / "gimp-dialog.png", 380)
        press_ok(s)
        t_ok = time.monotonic()
        seen_bar = False
        while time.monotonic() - t_ok < 60:
            if np.abs(status_bar(s.shot("running"), bottom) - idle_bar).mean() > 2:
                seen_bar = True
                break
            time.sleep(0.3)
        st = s.wait_state(lambda st: run_done(st, GROUP, 1, 1), 180)
        dupes = [ln for ln in (work / "gimp.log").read_text(errors="replace").splitlines()
                 if "duplicate mnemonic" in ln]
        ck.ok(not dupes, f"every dialog mnemonic is unique ({dupes[:1]})")
        ck.ok(seen_bar, "the status bar changes while the job runs (progress)")
        texts = [ln for ln in (work / "gimp.log").read_text(errors="replace").splitlines()
                 if ln.startswith("MAGIC progress: ")]
        ck.ok(any("synthesizing" in t for t in texts),
              f"progress text with the stage was sent to the status bar ({len(texts)} texts)")
        ck.ok(GROUP in groups(st) and len(children(st, GROUP)) == 1,
              f"the result group appears with one sample ({groups(st)})")
        ck.ok(plain(top_level(st)) == ["guide mask", "source mask", GROUP, "photo"],
              f"the group is directly above the photo ({top_level(st)})")
        ck.ok(st["selected"] == ["photo"] and st["undo_enabled"],
              f"the photo is selected again, undo enabled ({st['selected']})")
        ck.ok("magic-gimp-last-run" in st["parasites"], "the run's arguments are remembered")
        first_boxes = result_boxes(st)
        if a.shots:
            s.key("2", window=main_win)  # View > Zoom > 200 %
            time.sleep(1.0)
            small_png(s.shot("result"), (170, 40, MAIN[0], bottom), a.shots / "gimp-result.png",
                      720)
            s.key("1", window=main_win)

        # 2. one Undo removes the result, Redo brings it back
        s.key("ctrl+z", window=main_win)
        st = s.wait_state(lambda st: GROUP not in groups(st), 10)
        ck.ok(top_level(st) == top_level(before), f"one Undo removes the result ({top_level(st)})")
        s.key("ctrl+y", window=main_win)
        st = s.wait_state(lambda st: GROUP in groups(st), 10)
        ck.ok(GROUP in groups(st), "Redo brings it back")

        # 3. Filters > Repeat (Ctrl+F) runs again with the same layers, without the dialog,
        #    on the photo (Redo left GIMP's choice selected: the result layer it added back)
        redone = st["selected"]
        time.sleep(0.5)
        shown_before = canvas(s.shot("before-repeat"), bottom)
        s.key("ctrl+f", window=main_win)
        st = s.wait_state(lambda st: run_done(st, GROUP, 2, 1), 180)
        ck.ok(groups(st).count(GROUP) == 2 and not s.windows("GIMP Message"),
              f"Repeat runs again with the remembered layers ({groups(st)})")
        s.x("xdotool", "mousemove", str(SCREEN[0] - 1), str(SCREEN[1] - 1))
        time.sleep(1.0)
        changed = changed_pixels(shown_before, canvas(s.shot("after-repeat"), bottom))
        new, old = group_layers(st, GROUP)[:2] if len(group_layers(st, GROUP)) == 2 else ({}, {})
        ck.ok(groups(st).count(GROUP) == 2 and changed > 50,
              f"the canvas changes after Repeat ({changed} pixels): the new "
              "result is what it shows")
        ck.ok(new.get("visible") is True and old.get("visible") is False,
              f"the new result group is on top and shown, the earlier one hidden ({new.get('name')}"
              f" {new.get('visible')}, {old.get('name')} {old.get('visible')})")
        ck.ok(None not in (seed_of(new.get("name", "")), seed_of(old.get("name", "")))
              and seed_of(new["name"]) != seed_of(old["name"]),
              f"Repeat re-rolls: a new seed ({old.get('name')} -> {new.get('name')})")
        sizes = job_sizes(work)
        ck.ok(plain(top_level(st)) == ["guide mask", "source mask", GROUP, GROUP, "photo"]
              and st["selected"] == ["photo"] and sizes[-1:] == sizes[:1] == ["384x256"],
              f"Repeat ran on the photo (selected before: {redone}; jobs {sizes}; layers "
              f"{top_level(st)}; selected after: {st['selected']})")
        ck.ok(len(first_boxes) == 1 and result_boxes(st) == first_boxes * 2,
              f"Repeat used the same masks: its result covers the first one's box "
              f"({result_boxes(st)} vs {first_boxes})")
        s.key("ctrl+z", window=main_win)
        st = s.wait_state(lambda st: groups(st).count(GROUP) == 1, 10)
        ck.ok(groups(st).count(GROUP) == 1, "one Undo removes the repeated result")
        before_cancel = st
        # Undo selected another layer (GIMP's choice): the artist selects the photo again
        (work / "requests" / "select-photo").write_text("")
        st = s.wait_state(lambda st: st["selected"] == ["photo"], 5)
        ck.ok(st["selected"] == ["photo"], "the photo is selected again")

        # 4. Re-show (Shift+Ctrl+F): the layers are remembered and the dialog says so, by name,
        #    with the new seed it will use; a long job (asked about first), cancelled from the
        #    status bar at its first progress (the first stage the server reports: learning the
        #    object, when the engine reports that stage) ...
        last_seed = seed_of(group_layers(st, GROUP)[0]["name"]) if group_layers(st, GROUP) \
            else None
        log_lines = len((work / "gimp.log").read_text(errors="replace").splitlines())
        s.key("shift+ctrl+f", window=main_win)
        # the most the dialog allows: asked about on any CPU (the server measured its rate)
        if not run_dialog(s, ck, choose_layers=False, iterations=1000000, samples=16):
            raise RuntimeError("the re-shown dialog could not be driven")
        time.sleep(0.5)
        said = summary(work, "python-fu-magic-synthesize", log_lines) or ""
        m = re.search(r"Seed: (\d+) \(Vary is on", said)
        ck.ok("Source: 'source mask'" in said and "Guide mask: 'guide mask'" in said
              and m is not None and int(m.group(1)) != last_seed,
              f"Re-show shows what it will use: the layers by name and a new seed ({said})")
        ck.ok("of draft on this server (cpu" in said and "you will be asked before it starts"
              in said, f"the dialog shows the time this run takes on this server ({said})")
        if a.shots:
            x0, y0, x1, y1 = window_box(s, s.wait_window(DIALOG, 2))
            small_png(s.shot("reshow"), (x0, y0 - 20, x1, y1), a.shots / "gimp-reshow.png", 380)
        press_ok(s)
        ask = s.wait_window(LONG_RUN, 15)
        ck.ok(ask is not None, "a run estimated at more than a few minutes asks before it starts")
        if ask is not None:
            s.key("alt+s", window=ask)
        with MagicClient(address, timeout_s=10) as client:
            end = time.monotonic() + 60
            first = None
            while first is None and time.monotonic() < end:
                lines = (work / "gimp.log").read_text(errors="replace").splitlines()[log_lines:]
                first = next((ln for ln in lines if re.search(r": [a-z -]+ \d+/\d+", ln)), None)
                time.sleep(0.05)
            stage = re.sub(r"^MAGIC progress: MAGIC \w+: ([a-z -]+?) \d+/.*$", r"\1",
                           first or "none")
            job = server_running(client)
            button = cancel_button(s.shot("first-stage"), bottom)
            ck.ok(job is not None and button is not None,
                  f"the job runs ({stage}), with the Cancel button shown ({job})")
            stopped = click_cancel(s, client, job, button or (1118, bottom - 17))
        ck.ok(stopped is not None and stopped <= CANCEL_LIMIT_S,
              f"cancel at the first progress ({stage}) stops the job on the server within "
              f"{CANCEL_LIMIT_S:g} s (took {fmt_s(stopped)})")
        st = s.state()
        ck.ok(top_level(st) == top_level(before_cancel) and st["undo_enabled"]
              and st["selected"] == ["photo"], f"after that cancel the image is as before "
              f"({top_level(st)}, undo {st['undo_enabled']}, selected {st['selected']})")

        #    ... and again while previews are shown
        s.key("shift+ctrl+f", window=main_win)
        if not run_dialog(s, ck, choose_layers=False, iterations=100000, samples=1):
            raise RuntimeError("the re-shown dialog could not be driven")
        press_ok(s)
        ask = s.wait_window(LONG_RUN, 15)
        if ask is not None:
            s.key("alt+s", window=ask)
        pv = s.wait_window("MAGIC preview", 120)
        ck.ok(pv is not None, "the preview window opens")
        with MagicClient(address, timeout_s=10) as client:
            end = time.monotonic() + 120
            job = server_running(client)
            while job is None and time.monotonic() < end:
                time.sleep(0.3)
                job = server_running(client)
            if pv:
                time.sleep(1.0)  # a few frames in
                px0, py0, px1, py1 = window_box(s, pv)
                menu_bottom, toolbox_right = 60, 400
                ck.ok(min(px1 - px0, py1 - py0) >= 256 + 16 and py0 >= menu_bottom
                      and px0 >= toolbox_right and px1 <= SCREEN[0] - 8,
                      f"the preview window is in the top-right corner, at a useful size, not "
                      f"over the menu bar or the toolbox ({px0},{py0} to {px1},{py1})")
                if a.shots:
                    small_png(s.shot("preview"), (px0, py0 - 20, px1, py1),
                              a.shots / "gimp-preview.png", px1 - px0)
            ck.ok(job is not None, f"the job runs on the server ({job})")
            # While previews arrive (four a second), is the status bar's Cancel button there?
            # (With the old preview layer it was missing about 40% of the time.)
            seen = [cancel_button(s.shot(f"previews-{i}"), bottom) for i in range(8)]
            st = s.state()
            ck.ok(top_level(st) == top_level(before_cancel),
                  "previews do not touch the image's layers")
            shown = sum(b is not None for b in seen)
            ck.ok(shown == len(seen), f"the Cancel button is in the status bar in {shown} of "
                  f"{len(seen)} screenshots taken while previews are shown")
            button = next((b for b in seen if b is not None), None) or (1118, bottom - 17)
            stopped = click_cancel(s, client, job, button)
        ck.ok(stopped is not None and stopped <= CANCEL_LIMIT_S,
              f"cancel from the status bar while previews are shown stops the job on the server "
              f"within {CANCEL_LIMIT_S:g} s (took {fmt_s(stopped)})")
        s.x("xdotool", "mousemove", str(SCREEN[0] - 1), str(SCREEN[1] - 1))
        ck.ok(s.wait_gone("MAGIC preview", 10), "the preview window is gone")
        st = s.state()
        ck.ok(top_level(st) == top_level(before_cancel) and st["undo_enabled"]
              and st["selected"] == ["photo"],
              f"after the cancel the image is as before: {top_level(st)}, undo "
              f"{st['undo_enabled']}, selected {st['selected']}")
        s.key("ctrl+z", window=main_win)
        st = s.wait_state(lambda st: GROUP not in groups(st), 10)
        ck.ok(top_level(st) == top_level(before), "Undo still works after the cancel")

        # 5. Filters > MAGIC > Layout edit...: its dialog has the two label layer choosers
        (work / "requests" / "select-photo").write_text("")
        s.wait_state(lambda st: st["selected"] == ["photo"], 5)
        check_layout_dialog(s, ck, main_win)
        st = s.state()
        ck.ok(top_level(st) == top_level(before) and st["undo_enabled"],
              f"closing the Layout edit dialog changes nothing ({top_level(st)})")
        check_label_map_dialog(s, ck, main_win)
        st = s.state()
        ck.ok(top_level(st) == top_level(before) and st["undo_enabled"],
              f"closing the Label map dialog changes nothing ({top_level(st)})")

        # 6. Move object, the artist's way, then 7. no server and no weights
        check_move_object(s, ck, main_win, bottom, a.shots)
        check_no_server(s, ck, main_win, profile, a.inside, a.shots)
        (work / "requests" / "quit").write_text("")
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        ck.ok(False, f"GUI session: {exc}")
        s.shot("failure")
    finally:
        s.stop_all()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
    log(f"{ck.passed} checks passed, {len(ck.failed)} failed")
    for f in ck.failed:
        log(f"FAILED: {f}")
    return 1 if ck.failed else 0


def open_from_menu(s: Session, ck: Checks, main_win: str, item_key: str, title: str
                   ) -> tuple[str | None, int]:
    """Filters > MAGIC > the item with mnemonic `item_key`; its dialog's window (None: it did
    not open, a failed check) and how many lines GIMP's log had before."""
    log_lines = len((s.work / "gimp.log").read_text(errors="replace").splitlines())
    s.key("alt+r", "Up", "Right", item_key, window=main_win)
    d = s.wait_window(title, 15)
    if ck.ok(d is not None, f"the dialog '{title}' opens"):
        time.sleep(0.8)
    return d, log_lines


def check_layout_dialog(s: Session, ck: Checks, main_win: str) -> None:
    """Open Layout edit from the menu, open and close both label layer choosers through their
    mnemonics, then cancel the dialog."""
    d, log_lines = open_from_menu(s, ck, main_win, "y", LAYOUT_DIALOG)  # La_yout edit...
    if d is None:
        return
    for mnemonic, what in (("alt+b", "source labels"), ("alt+g", "target labels")):
        s.key(mnemonic, window=d)
        c = s.wait_window("Choose drawable", 8)
        if not ck.ok(c is not None, f"the {what} layer chooser opens ({mnemonic})"):
            return
        time.sleep(0.5)
        s.key("Tab", "Down", "Return", "alt+o")
        ck.ok(s.wait_gone("Choose drawable", 5), f"the {what} layer chooser closes")
    dupes = [ln for ln in (s.work / "gimp.log").read_text(errors="replace").splitlines()
             [log_lines:] if "duplicate mnemonic" in ln]
    ck.ok(not dupes, f"every Layout edit mnemonic is unique ({dupes[:1]})")
    s.key("alt+c", window=d)
    ck.ok(s.wait_gone(LAYOUT_DIALOG, 5), "Cancel closes the Layout edit dialog")


def check_label_map_dialog(s: Session, ck: Checks, main_win: str) -> None:
    """Open Label map from the menu (its dialog has no preset box), then cancel it."""
    d, log_lines = open_from_menu(s, ck, main_win, "l", LABEL_MAP_DIALOG)  # _Label map...
    if d is None:
        return
    shown = dialog_report(s.work, "python-fu-magic-label-map", log_lines)
    ck.ok(shown is not None and shown.endswith("{}; presets offered: null"),
          f"the Label map dialog has neither samples nor presets ({shown})")
    s.key("alt+c", window=d)
    ck.ok(s.wait_gone(LABEL_MAP_DIALOG, 5), "Cancel closes the Label map dialog")


def object_box(work: Path) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the object the source mask marks: the artist's rectangle selection."""
    m = np.asarray(Image.open(work / "inputs/source.png").convert("L")) > 127
    ys, xs = np.nonzero(m)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def check_move_object(s: Session, ck: Checks, main_win: str, bottom: int,
                      shots: Path | None) -> None:
    """Select the object, Edit > Copy, Edit > Paste (README: GIMP 3.0.4 pastes it as a new
    layer), drag that layer, select the photo, Filters > MAGIC > Move object... with it as
    the moved layer: the canvas shows the result, the moved layer is hidden, Undo shows it."""
    work = s.work
    x, y, w, h = object_box(work)
    (work / "requests" / f"select-rect-{x}_{y}_{w}_{h}").write_text("")
    st = s.wait_state(lambda st: st["selection"], 5)
    names_before = {la["name"] for la in st["layers"]}
    s.key("ctrl+c", "ctrl+v", window=main_win)
    st = s.wait_state(lambda st: len(st["layers"]) > len(names_before), 10)
    new = [la for la in st["layers"] if la["name"] not in names_before]
    pasted = new[0] if len(new) == 1 else None
    if not ck.ok(pasted is not None and pasted["parent"] is None and not pasted["group"]
                 and "Floating" not in pasted["name"] and "floating" not in pasted["name"],
                 f"Edit > Paste makes a new layer in GIMP 3.0.4, as README says "
                 f"({[la['name'] for la in st['layers']]})"):
        return
    ck.ok(st["selection"], "the selection (the object) stays after the paste")
    dx = min(80, 384 - (x + w) - 4)
    (work / "requests" / f"move-layer-{pasted['name']}_{dx}_0").write_text("")
    (work / "requests" / "select-photo").write_text("")
    st = s.wait_state(lambda st: st["selected"] == ["photo"], 5)
    time.sleep(0.5)
    shown_before = canvas(s.shot("before-move"), bottom)
    d, log_lines = open_from_menu(s, ck, main_win, "m", MOVE_DIALOG)  # _Move object...
    if d is None:
        return
    downs = top_level(st).index(pasted["name"]) + 1
    for attempt in (1, 2):  # a loaded machine may lose a key press in the chooser: once more
        s.key("alt+m", window=d)  # _Moved layer: its Browse... button
        c = s.wait_window("Choose drawable", 8)
        if not ck.ok(c is not None, "the moved layer chooser opens (alt+m)"):
            return
        time.sleep(1.0)
        s.key("Tab", *["Down"] * downs, "Return", "alt+o")
        ck.ok(s.wait_gone("Choose drawable", 5), "the moved layer chooser closes with the choice")
        time.sleep(0.5)
        picked = summary(work, "python-fu-magic-move-object", log_lines) or ""
        if f"Moved layer: '{pasted['name']}'" in picked:
            break
        log(f"the chooser picked another layer (attempt {attempt}): {picked}")
    s.key("alt+i", "ctrl+a", window=d)
    s.x("xdotool", "type", "--delay", "60", "20")
    s.key("Tab")
    s.key("alt+p", "ctrl+a", window=d)  # two samples, to keep one of them afterwards
    s.x("xdotool", "type", "--delay", "60", "2")
    s.key("Tab")
    time.sleep(0.5)
    said = summary(work, "python-fu-magic-move-object", log_lines) or ""
    ck.ok(f"Moved layer: '{pasted['name']}'" in said and "Source: none: the selection" in said,
          f"the Move object dialog names the moved layer it will use ({said})")
    s.key("alt+o", window=d)
    st = s.wait_state(lambda st: run_done(st, MOVE_GROUP, 1, 2), 180)
    moved = layer(st, pasted["name"])
    ck.ok(MOVE_GROUP in groups(st) and moved is not None and moved["visible"] is False,
          f"after Move object the moved layer is hidden, not deleted ({top_level(st)}, "
          f"{moved})")
    s.x("xdotool", "mousemove", str(SCREEN[0] - 1), str(SCREEN[1] - 1))
    time.sleep(1.0)
    changed = changed_pixels(shown_before, canvas(s.shot("after-move"), bottom))
    ck.ok(MOVE_GROUP in groups(st) and changed > 50,
          f"the canvas shows the moved object's result ({changed} pixels changed)")
    if shots:
        s.key("2", window=main_win)
        time.sleep(1.0)
        small_png(s.shot("move-result"), (170, 40, MAIN[0], bottom), shots / "gimp-move.png",
                  720)
        s.key("1", window=main_win)
    # Filters > MAGIC > Keep this sample, on the second sample (selected in the Layers dock)
    samples = children(st, MOVE_GROUP)
    if ck.ok(len(samples) == 2, f"two samples to choose from ({samples})"):
        (work / "requests" / f"select-layer-{samples[1]}").write_text("")
        s.wait_state(lambda st: st["selected"] == [samples[1]], 5)
        s.key("alt+r", "Up", "Right", "k", window=main_win)  # _Keep this sample
        st = s.wait_state(lambda st: len(children(st, MOVE_GROUP)) == 1, 15)
        ck.ok(children(st, MOVE_GROUP) == [samples[1]] and layer(st, samples[1])["visible"],
              f"Keep this sample keeps the selected sample and drops the other "
              f"({children(st, MOVE_GROUP)})")
        s.key("ctrl+z", window=main_win)
        st = s.wait_state(lambda st: len(children(st, MOVE_GROUP)) == 2, 10)
        ck.ok(children(st, MOVE_GROUP) == samples, "one Undo brings the other sample back")
    s.key("ctrl+z", window=main_win)
    st = s.wait_state(lambda st: MOVE_GROUP not in groups(st), 10)
    moved = layer(st, pasted["name"])
    ck.ok(MOVE_GROUP not in groups(st) and moved is not None and moved["visible"] is True,
          f"one Undo removes the result and shows the moved layer again ({moved})")


RELAY = """#!/bin/sh
# the plug-in's server_command inside the chroot: the real magic-server runs on the host
: > "{d}/relay/go"
while [ ! -f "{d}/relay/rc" ]; do sleep 0.1; done
cat "{d}/relay/out"
exit "$(cat "{d}/relay/rc")"
"""


def relay_server(work: Path, argv: list[str], env: dict) -> threading.Thread:
    """Runs `argv` on the host when the chroot's relay script asks (see RELAY)."""
    (work / "relay").mkdir(exist_ok=True)

    def serve() -> None:
        end = time.monotonic() + 300
        while not (work / "relay/go").exists():
            if time.monotonic() > end:
                return
            time.sleep(0.1)
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO,
                           timeout=120, check=False)
        (work / "relay/out").write_text(r.stdout + r.stderr)
        (work / "relay/rc").write_text(str(r.returncode))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def check_no_server(s: Session, ck: Checks, main_win: str, profile: Path, inside: str,
                    shots: Path | None) -> None:
    """No server running and no weights installed: Move object starts the real magic-server (the
    installer's server_command; here on the host, through a relay) with an empty weights
    cache; it refuses at once and GIMP shows why within NO_SERVER_LIMIT_S."""
    work = s.work
    closed = f"tcp://127.0.0.1:{free_port()}"
    relay = work / "relay.sh"
    relay.write_text(RELAY.format(d=inside))
    relay.chmod(0o755)
    config_file = profile / "plug-ins/magic-gimp/magic_gimp.json"
    config = json.loads(config_file.read_text())
    config.update(server_address=closed, server_command=["/bin/sh", f"{inside}/relay.sh"])
    config_file.write_text(json.dumps(config))
    empty = work / "empty-weights-cache"
    # no weights and no stand-in classifier either (with its package, the server starts on it)
    no_stand_in = ("import sys; from magic_server.weights import choice as w; "
                   "w.stand_in_available = lambda: False; "
                   "from magic_server.serve.command import main; sys.exit(main(sys.argv[1:]))")
    relay_server(work, [sys.executable, "-c", no_stand_in, "--bind", closed,
                        "--device", "cpu"],
                 {**os.environ, "MAGIC_CACHE_DIR": str(empty), "PYTHONPATH": str(REPO)})
    d, log_lines = open_from_menu(s, ck, main_win, "m", MOVE_DIALOG)  # the same move again
    if d is None:
        return
    said = summary(work, "python-fu-magic-move-object", log_lines) or ""
    ck.ok("Time: unknown: the MAGIC server is not running" in said,
          f"with no server the dialog says the time is unknown, and why ({said})")
    t0 = time.monotonic()
    s.key("alt+o", window=d)
    said, took = None, None
    while time.monotonic() - t0 < 60 and said is None:
        lines = (work / "gimp.log").read_text(errors="replace").splitlines()[log_lines:]
        said = next((ln for ln in lines if ln.startswith("MAGIC error: ")), None)
        took = time.monotonic() - t0
        time.sleep(0.1)
    box = s.wait_window("GIMP Message|Error|Calling error", 10)
    ck.ok(said is not None and took <= NO_SERVER_LIMIT_S
          and "no classifier weights installed: run `magic-installer weights`" in said
          and box is not None,
          f"no server and no weights: GIMP shows why within {NO_SERVER_LIMIT_S:g} s "
          f"(took {fmt_s(took)}; {said}; message window {box})")
    if shots and box is not None:
        x0, y0, x1, y1 = window_box(s, box)
        small_png(s.shot("no-server"), (x0, y0 - 20, x1, y1), shots / "gimp-no-weights.png",
                  min(480, x1 - x0))
    if box is not None:
        s.key("Return", window=box)


def fmt_s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.3f} s"


def click_cancel(s: Session, client: MagicClient, job: str | None,
                 button: tuple[int, int]) -> float | None:
    """Click the status bar's Cancel button; seconds until the job left the server, or None."""
    s.x("xdotool", "mousemove", str(button[0]), str(button[1]))
    time.sleep(0.4)  # GTK wants the pointer over the button before the click
    t_click = time.monotonic()
    s.x("xdotool", "click", "1")
    while time.monotonic() - t_click < 15:
        if server_running(client) != job:
            stopped = time.monotonic() - t_click
            s.x("xdotool", "mousemove", str(SCREEN[0] - 1), str(SCREEN[1] - 1))
            return stopped
        time.sleep(0.05)
    return None


def window_box(s: Session, window: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a window's contents on the screen (xwininfo: xdotool's
    getwindowgeometry counts the window manager's frame twice)."""
    info = {}
    for line in s.x("xwininfo", "-id", window).splitlines():
        key, _, value = line.strip().partition(":")
        info[key] = value.strip()
    x0, y0 = int(info["Absolute upper-left X"]), int(info["Absolute upper-left Y"])
    return x0, y0, x0 + int(info["Width"]), y0 + int(info["Height"])


def cancel_button(png: Path, bottom: int) -> tuple[int, int] | None:
    """The status bar's Cancel button (icon + "Cancel"), shown at the right end of the status
    bar while a progress runs, left of the docks: the rightmost cluster of bright columns in that
    strip (the progress text, centred, can reach far to the right: it is a separate cluster)."""
    im = np.asarray(Image.open(png).convert("L"))
    y0, y1 = bottom - 28, bottom - 6
    x0 = 600
    cols = np.where((im[y0:y1, x0:1168] > 150).sum(axis=0) >= 2)[0]
    if len(cols) == 0:
        return None
    right = left = int(cols[-1])
    for c in cols[::-1]:
        if left - int(c) > 12:
            break
        left = int(c)
    if right - left < 40:  # an icon and a word, not a stray pixel
        return None
    return x0 + (left + right) // 2, (y0 + y1) // 2


if __name__ == "__main__":
    sys.exit(main())
