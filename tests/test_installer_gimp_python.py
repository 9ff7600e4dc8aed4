"""The Python GIMP itself runs (its .interp files), pyzmq that never shadows GIMP's own, a
--gimp-profile that does not exist yet, CurveZMQ keys in magic_gimp.json, and doctor's report."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

from installer_env import LINUX_LAYOUTS, VENV_PY, Runner, context, make_profiles

from installer import gimp_python as gp
from installer import plugin_install
from installer.cli import main
from installer.profiles import Profile

KEYS = {"server": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
        "client_public": "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID",
        "client_secret": "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"}


def write_cert(path: Path, public: str, secret: str | None = None) -> Path:
    lines = ["#   ZeroMQ CURVE certificate", "metadata", "curve",
             f'    public-key = "{public}"']
    if secret:
        lines.append(f'    secret-key = "{secret}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_interp_files_name_the_python_gimp_runs(tmp_path):
    prefix = tmp_path / "gimp"
    interp = prefix / "lib/x86_64-linux-gnu/gimp/3.0/interpreters"
    interp.mkdir(parents=True)
    (interp / "default.interp").write_text("# comments only, as Debian ships it\n#scm=/x\n")
    python = prefix / "bin/python3.13"
    python.parent.mkdir()
    python.write_text("")
    (interp / "pygimp.interp").write_text(
        f"python={python}\n:Python:E::py::{python}:\n")
    profile = Profile(tmp_path / "p", "3.0", "native")
    command, how = gp.find_gimp_python(profile, "Linux", {}, lambda n: "/usr/bin/python3",
                                       prefixes=[prefix])
    assert command == [str(python)] and "pygimp.interp" in how
    # binfmt line only, relative program: resolved inside the prefix (Windows builds do that)
    (interp / "pygimp.interp").write_text(":Python:E::py::bin/python3.13:\n")
    assert gp.find_gimp_python(profile, "Linux", {}, lambda n: None, prefixes=[prefix])[0] == [
        str(python)]
    # no interpreter named: GIMP runs the file and its #!/usr/bin/env python3 finds python3
    (interp / "pygimp.interp").unlink()
    command, how = gp.find_gimp_python(profile, "Linux", {}, lambda n: "/opt/py/bin/python3",
                                       prefixes=[prefix])
    assert command == ["/opt/py/bin/python3"] and "#!" in how


def test_vendor_tag_matches_the_plugin_side():
    import sysconfig

    from fakes import gimp3 as fake

    with fake.installed():
        from gimp_plugin import gimp3_host

        plugin_tag = gimp3_host.vendor_tag()
    assert plugin_tag == gp.vendor_tag("{}.{}".format(*sys.version_info[:2]), sysconfig.get_platform())


def test_a_working_pyzmq_is_never_shadowed(tmp_path, repo):
    """GIMP's Python has pyzmq (the venv's): nothing is downloaded and files an older install
    vendored at the folder's top (they would be imported first) are removed."""
    home = tmp_path / "home"
    (profile,) = make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    runner = Runner()
    ctx, out = context(home, repo, runner=runner, python3=VENV_PY)
    assert main(["install", "--no-weights"], ctx) == 0, out.getvalue()
    folder = profile / "plug-ins/magic-gimp"
    plugin_install.add_files(folder, {"zmq/__init__.py": b"raise ImportError('cp311 build')\n"})
    assert main(["install", "--no-weights"], ctx) == 0, out.getvalue()
    assert not (folder / "zmq").exists()
    record = json.loads((folder / ".magic-install.json").read_text())
    assert record["vendored"] == {}
    assert not any("download" in c for c in runner.calls)
    assert "removed 1 vendored file(s)" in out.getvalue()
    assert f"GIMP runs Python {sys.version_info[0]}.{sys.version_info[1]} at" in out.getvalue()


def test_gimp_python_of_another_version_gets_a_wheel_for_that_version_only(tmp_path, repo):
    """The issue's case: GIMP runs Python 3.13, the installer runs another one. The wheel is
    asked for 3.13 and goes under vendor/cp313-<platform>/, nothing for the installer's own
    Python and nothing at the folder's top."""
    home = tmp_path / "home"
    (profile,) = make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    gimp_py = tmp_path / "gimp-python3.13"
    gimp_py.write_text(
        "#!/bin/sh\n# GIMP's own Python 3.13: answers the installer's probe (-c PROBE [DIR])\n"
        'if [ -n "$3" ] && [ -f "$3/vendor/cp313-linux_x86_64/zmq/__init__.py" ]; then\n'
        "  z='\"26.0.0\"'; w='\"vendored\"'; else z=null; w=null; fi\n"
        'echo "{\\"version\\": \\"3.13\\", \\"platform\\": \\"linux-x86_64\\", '
        '\\"zmq\\": $z, \\"zmq_from\\": $w, \\"executable\\": \\"/opt/gimp/bin/python3.13\\"}"\n')
    gimp_py.chmod(0o755)
    runner = Runner()
    ctx, out = context(home, repo, runner=runner, python3=str(gimp_py))
    assert main(["install", "--no-weights"], ctx) == 0, out.getvalue()
    download = next(c for c in runner.calls if "download" in c)
    assert download[download.index("--python-version") + 1] == "3.13"
    folder = profile / "plug-ins/magic-gimp"
    record = json.loads((folder / ".magic-install.json").read_text())
    assert record["vendored"] and all(
        k.startswith("vendor/cp313-linux_x86_64/") for k in record["vendored"])
    assert sorted(p.name for p in (folder / "vendor").iterdir()) == ["cp313-linux_x86_64"]
    assert not (folder / "zmq").exists()
    text = out.getvalue()
    assert "GIMP runs Python 3.13 at /opt/gimp/bin/python3.13" in text
    assert "placed in" in text and "ACTION NEEDED: no classifier weights" in text
    assert sum(ln.startswith("ACTION NEEDED") for ln in text.splitlines()) == 1  # no pyzmq one


def test_profile_folder_that_does_not_exist_yet(tmp_path, repo):
    home = tmp_path / "home"
    home.mkdir()
    target = home / ".config/GIMP/3.0"
    ctx, out = context(home, repo, python3=VENV_PY)
    assert main(["install", "--no-weights", "--gimp-profile", str(target)], ctx) == 0, \
        out.getvalue()
    assert (target / "plug-ins/magic-gimp/magic-gimp.py").is_file()
    record = json.loads((target / "plug-ins/magic-gimp/.magic-install.json").read_text())
    assert {"..", "../..", "."} <= set(record["created_dirs"])
    assert main(["uninstall", "--gimp-profile", str(target)], ctx) == 0, out.getvalue()
    assert not (home / ".config").exists()  # every folder the install made, and only those


def test_curve_keys_are_written_to_the_plugin_config(tmp_path, repo, capsys):
    home = tmp_path / "home"
    (profile,) = make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    server = write_cert(tmp_path / "server.key", KEYS["server"])
    client = write_cert(tmp_path / "client.key_secret", KEYS["client_public"],
                        KEYS["client_secret"])
    ctx, out = context(home, repo, python3=VENV_PY)
    assert main(["install", "--no-weights", "--server-key", str(server), "--client-keys",
                 str(client)], ctx) == 0, out.getvalue()
    path = profile / "plug-ins/magic-gimp/magic_gimp.json"
    config = json.loads(path.read_text())
    assert config["server_public_key"] == KEYS["server"]
    assert config["client_public_key"] == KEYS["client_public"]
    assert config["client_secret_key"] == KEYS["client_secret"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # one without the other, or a public-only file as the key pair: a clear error, no traceback
    capsys.readouterr()
    assert main(["install", "--no-weights", "--server-key", str(server)], ctx) == 1
    assert "--client-keys" in capsys.readouterr().err
    assert main(["install", "--no-weights", "--server-key", str(server), "--client-keys",
                 str(server)], ctx) == 1
    assert "holds no CurveZMQ secret key" in capsys.readouterr().err


def test_doctor_says_which_python_gimp_runs_and_where_pyzmq_comes_from(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    ctx, out = context(home, repo, python3=VENV_PY)
    assert main(["install", "--no-weights"], ctx) == 0
    main(["doctor"], ctx)
    text = out.getvalue()
    assert f"GIMP runs Python {sys.version_info[0]}.{sys.version_info[1]} at" in text
    assert "imports pyzmq" in text and "(its own)" in text
