"""install_plugins / uninstall_plugins with the project's real GIMP 3 plug-in files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from installer_env import snapshot

from gimp_plugin import manifest
from installer import plugin_install as pi

CMD = [sys.executable, "-m", "magic_server.server", "--bind", "tcp://127.0.0.1:5599"]


def test_install_uninstall_real_gimp3_plugin(tmp_path):
    profile = tmp_path / "throwaway"
    profile.mkdir()
    (profile / "plug-ins").mkdir()
    (profile / "plug-ins" / "other-plugin.py").write_text("# not ours\n")
    before = snapshot(profile, dir_mtimes=False)
    entries = pi.install_plugins(profile, "tcp://127.0.0.1:5599", CMD)
    folder = profile / "plug-ins" / manifest.GIMP3.folder
    assert entries == [folder / f"{manifest.GIMP3.folder}.py"]
    assert os.access(entries[0], os.X_OK)
    assert entries[0].read_bytes() == (manifest.REPO_ROOT / manifest.GIMP3.entry).read_bytes()
    for _, rel in manifest.GIMP3.files():
        assert (folder / rel).is_file(), rel
    # the copies work on their own: a Python without site-packages reads the config through the
    # plug-in's own settings module and imports the protocol from the plug-in folder
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from gimp_plugin import settings; from magic_protocol import protocol; "
            "import json; c = settings.load_config(sys.argv[1]); "
            "print(json.dumps([c['server_address'], c['server_command'], protocol.__file__]))")
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(folder)], capture_output=True,
                          text=True, check=True)
    address, command, proto_file = json.loads(proc.stdout)
    assert address == "tcp://127.0.0.1:5599" and command == CMD
    assert proto_file.startswith(str(folder))
    assert pi.check_files(folder) == []

    after = snapshot(profile)
    assert pi.install_plugins(profile, "tcp://127.0.0.1:5599", CMD) == entries
    assert snapshot(profile) == after
    # a changed address is written, nothing else is touched
    pi.install_plugins(profile, "tcp://127.0.0.1:6000", None)
    assert json.loads((folder / "magic_gimp.json").read_text()) == {
        "server_address": "tcp://127.0.0.1:6000", "server_command": None}

    (folder / "__pycache__").mkdir()  # GIMP's Python leaves these behind
    (folder / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    pi.uninstall_plugins(profile)
    assert snapshot(profile, dir_mtimes=False) == before


def test_vendored_files_are_kept_and_dropped_files_removed_on_reinstall(tmp_path):
    folder = pi.install_plugins(tmp_path / "3.0", "tcp://127.0.0.1:5591", None)[0].parent
    pi.add_files(folder, {"zmq/__init__.py": b"", "zmq/backend/x.so": b"\0"})
    record = json.loads((folder / ".magic-install.json").read_text())
    assert "zmq/backend/x.so" in record["vendored"]
    # an older version of the plug-in had a file this one does not
    record["files"]["gimp_plugin/old_module.py"] = "0" * 64
    (folder / "gimp_plugin/old_module.py").write_text("# old\n")
    (folder / ".magic-install.json").write_text(json.dumps(record))
    pi.install_plugins(tmp_path / "3.0", "tcp://127.0.0.1:5591", None)
    assert (folder / "zmq/backend/x.so").exists()
    assert not (folder / "gimp_plugin/old_module.py").exists()
    pi.uninstall_plugins(tmp_path / "3.0")
    assert not (tmp_path / "3.0").exists()  # the install created it, so it goes
