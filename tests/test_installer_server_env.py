"""Choosing and preparing the server's environment, without installing torch (recording runner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from installer import server_env as se


def linux(accel="cpu", **kw):
    return se.Machine("Linux", "x86_64", accel, **kw)


def test_detects_nvidia_gpu_from_nvidia_smi():
    def runner(argv, **kw):
        return subprocess.CompletedProcess(argv, 0, "NVIDIA RTX A4000, 16376\n", "")
    m = se.detect_machine("Linux", "x86_64", runner, {"nvidia-smi": "/x"}.get)
    assert (m.accelerator, m.gpu_name, m.gpu_memory_mb) == ("cuda", "NVIDIA RTX A4000", 16376)
    assert "16 GiB" in m.describe()
    mac = se.detect_machine("Darwin", "arm64", runner, lambda n: None)
    assert mac.accelerator == "mps"
    assert se.detect_machine("Windows", "AMD64", runner, lambda n: None).accelerator == "cpu"


@pytest.mark.parametrize("accel,index,gb", [("cuda", "cu128", True), ("rocm", "rocm", True),
                                           ("cpu", "whl/cpu", False)])
def test_auto_choice_follows_the_machine(tmp_path, accel, index, gb):
    plan = se.plan_env("auto", linux(accel), tmp_path / "venv", tmp_path, ["torch"])
    assert plan.build == accel
    assert plan.commands[0] == [sys.executable, "-m", "venv", str(tmp_path / "venv")]
    assert index in " ".join(plan.commands[1])
    assert plan.commands[2][-1] == str(tmp_path)
    assert "(estimate)" in plan.summary() and ("GB" in plan.summary()) == gb


def test_current_environment_and_overrides(tmp_path):
    assert se.plan_env("auto", linux(), tmp_path, tmp_path, []).commands == []
    with pytest.raises(ValueError, match="lacks torch"):
        se.plan_env("current", linux(), tmp_path, tmp_path, ["torch"])
    with pytest.raises(ValueError, match="Apple"):
        se.plan_env("mps", linux(), tmp_path, tmp_path, [])
    mac = se.Machine("Darwin", "arm64", "mps")
    plan = se.plan_env("mps", mac, tmp_path / "v", tmp_path, [])
    assert "--index-url" not in plan.commands[1]
    with pytest.raises(ValueError, match="no cuda build"):
        se.plan_env("cuda", mac, tmp_path, tmp_path, [])


def test_apply_runs_in_order_then_nothing_to_do(tmp_path):
    calls = []
    venv = tmp_path / "venv"

    def runner(argv, **kw):
        calls.append(argv)
        if argv[1:3] == ["-m", "venv"]:
            (venv / "bin").mkdir(parents=True)
            (venv / "bin/python").write_text("")
        return subprocess.CompletedProcess(argv, 0)
    plan = se.plan_env("cpu", linux(), venv, tmp_path, [])
    se.apply_plan(plan, runner, log=lambda s: None)
    assert calls == plan.commands and len(calls) == 3
    assert json.loads((venv / se.MARKER).read_text()) == {"build": "cpu"}
    again = se.plan_env("cpu", linux(), venv, tmp_path, [])
    assert again.commands == [] and again.python == str(venv / "bin/python")
    # another build replaces torch in the same venv
    assert "cu128" in " ".join(se.plan_env("cuda", linux("cuda"), venv, tmp_path, []).commands[0])


def test_failed_step_is_one_clear_error(tmp_path):
    plan = se.plan_env("cpu", linux(), tmp_path / "v", tmp_path, [])
    with pytest.raises(RuntimeError, match="failed .*exit status 1.*network"):
        se.apply_plan(plan, lambda argv, **kw: subprocess.CompletedProcess(argv, 1), lambda s: None)


def test_missing_modules_here_and_in_another_python(tmp_path):
    assert se.missing_modules() == []
    bare = tmp_path / "py"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    assert "torch" in se.missing_modules(str(bare))
    assert se.missing_modules(str(tmp_path / "nope")) == list(se.SERVER_MODULES)


def test_systemd_unit_text():
    unit = se.systemd_unit("/opt/my env/python", "tcp://127.0.0.1:5591", {"A": "b"})
    assert 'ExecStart="/opt/my env/python" -m magic_server.server --bind' in unit
    assert "Environment=A=b" in unit and "WantedBy=default.target" in unit
    assert Path(se.venv_python(Path("v"), "Windows")).as_posix() == "v/Scripts/python.exe"
