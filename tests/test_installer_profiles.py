"""Profile discovery per platform, GIMP's Python per packaging, pip platform tags, fixes."""

from __future__ import annotations

from pathlib import Path

import pytest
from installer_env import make_profiles

from installer import gimp_python as gp
from installer.profiles import Profile, find_profiles, profile_from_dir, variant_for


def test_linux_native_flatpak_snap_and_versions(tmp_path):
    make_profiles(tmp_path, [".config/GIMP/3.0", ".config/GIMP/2.10", ".config/GIMP/2.8",
                             ".config/GIMP/notes", ".var/app/org.gimp.GIMP/config/GIMP/3.2",
                             "snap/gimp/current/.config/GIMP/2.10"])
    found = {(p.path.relative_to(tmp_path).as_posix(), p.gimp_version, p.flavour)
             for p in find_profiles("Linux", tmp_path, {})}
    assert found == {
        (".config/GIMP/2.10", "2.10", "native"),
        (".config/GIMP/3.0", "3.0", "native"),
        (".var/app/org.gimp.GIMP/config/GIMP/3.2", "3.0", "flatpak"),
        ("snap/gimp/current/.config/GIMP/2.10", "2.10", "snap"),
    }


def test_xdg_config_home_windows_and_macos(tmp_path):
    make_profiles(tmp_path, ["xdg/GIMP/3.0", "Roaming/GIMP/3.0", "Roaming/GIMP/2.10",
                             "Library/Application Support/GIMP/2.10"])
    linux = find_profiles("Linux", tmp_path, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert [p.path for p in linux] == [tmp_path / "xdg/GIMP/3.0"]
    win = find_profiles("Windows", tmp_path, {"APPDATA": str(tmp_path / "Roaming")})
    assert [(p.gimp_version, p.flavour) for p in win] == [("2.10", "windows"), ("3.0", "windows")]
    mac = find_profiles("Darwin", tmp_path, {})
    assert [(p.gimp_version, p.flavour) for p in mac] == [("2.10", "macos")]
    assert find_profiles("Linux", tmp_path / "nothing", {}) == []


def test_version_of_a_given_profile_folder(tmp_path):
    assert variant_for("3.4") == "3.0" and variant_for("2.10") == "2.10"
    assert variant_for("2.8") is None and variant_for("x") is None
    assert profile_from_dir(tmp_path / "GIMP" / "2.10").gimp_version == "2.10"
    assert profile_from_dir(tmp_path / "throwaway").gimp_version == "3.0"
    assert profile_from_dir(tmp_path / "throwaway", "2.10").gimp_version == "2.10"


def test_gimp_python_command_per_packaging(tmp_path):
    which = {"flatpak": "/usr/bin/flatpak", "python3": "/usr/bin/python3"}.get
    flat = Profile(tmp_path, "3.0", "flatpak")
    assert gp.gimp_python_command(flat, "Linux", {}, which) == [
        "/usr/bin/flatpak", "run", "--command=python3", "org.gimp.GIMP"]
    snap = Profile(tmp_path, "3.0", "snap")
    assert gp.gimp_python_command(snap, "Linux", {}, which) == ["/snap/gimp/current/usr/bin/python3"]
    gimp3 = tmp_path / "GIMP 3" / "bin" / "python.exe"
    gimp3.parent.mkdir(parents=True)
    gimp3.write_text("")
    win = Profile(tmp_path, "3.0", "windows")
    assert gp.gimp_python_command(win, "Windows", {"ProgramFiles": str(tmp_path)}, which) == [
        str(gimp3)]
    assert gp.gimp_python_command(win, "Windows", {}, which) is None


def test_probe_reads_a_real_python(tmp_path):
    import sys

    info = gp.probe([sys.executable])
    assert info.version == "{}.{}".format(*sys.version_info[:2]) and info.zmq and not info.error
    bare = gp.probe([sys.executable, "-S"])
    assert bare.zmq is None and bare.platform
    broken = gp.probe([str(tmp_path / "no-python")])
    assert broken.error and "cannot run" in broken.error


@pytest.mark.parametrize("platform,expected", [
    ("linux-x86_64", "manylinux2014_x86_64"),
    ("linux-aarch64", "manylinux_2_28_aarch64"),
    ("win-amd64", "win_amd64"),
    ("macosx-11.0-arm64", "macosx_11_0_arm64"),
])
def test_pip_platform_tags(platform, expected):
    assert expected in gp.pip_platforms(platform)


def test_pip_download_command_for_python2_pins_old_pyzmq(tmp_path):
    info = gp.PythonInfo(["python2"], "2.7", "linux-x86_64")
    argv = gp.pip_download_command(info, tmp_path, ["pip"])
    assert argv[:3] == ["pip", "download", "pyzmq<20"] and "2.7" in argv


@pytest.mark.parametrize("flavour,system,release,expected", [
    ("native", "Linux", {"ID": "ubuntu", "ID_LIKE": "debian"}, "sudo apt install python3-zmq"),
    ("native", "Linux", {"ID": "fedora"}, "sudo dnf install python3-zmq"),
    ("native", "Linux", {"ID": "arch"}, "sudo pacman -S python-pyzmq"),
    ("flatpak", "Linux", {}, "flatpak run --command=sh org.gimp.GIMP"),
    ("snap", "Linux", {}, "pyzmq wheel"),
    ("windows", "Windows", {}, "-m pip install pyzmq"),
    ("macos", "Darwin", {}, "-m pip install --user pyzmq"),
])
def test_fix_hint_names_the_exact_command(flavour, system, release, expected):
    info = gp.PythonInfo([r"C:\Program Files\GIMP 3\bin\python.exe"])
    hint = gp.fix_hint(Profile(Path("/p"), "3.0", flavour), info, system, release)
    assert expected in hint


def test_os_release_parsing(tmp_path):
    f = tmp_path / "os-release"
    f.write_text('NAME="Debian GNU/Linux"\nID=debian\n')
    assert gp.read_os_release(f)["ID"] == "debian"
    assert gp.read_os_release(tmp_path / "missing") == {}
