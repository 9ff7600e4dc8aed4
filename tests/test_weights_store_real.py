"""The whole weights path with a real-format checkpoint: a ResNet-50 saved the way the Madry-lab
robustness library saves it (~100 MB), served on 127.0.0.1 with a cut connection, then
download -> resume -> verify -> safetensors -> load into ResNet50."""

from __future__ import annotations

import time

import pytest
import torch
from http_fixture import FileServer, Route

from magic_server.engine.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50
from magic_server.weights import store as ws
from magic_server.weights.checkpoints import load_state_dict
from magic_server.weights.errors import WeightsError


@pytest.fixture(scope="session")
def robustness_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    state = ResNet50().state_dict()
    model = {f"module.model.{k}": v for k, v in state.items()}
    # robustness' attacker wraps the same model: same tensors, stored once by torch.save
    model.update({f"module.attacker.model.{k}": v for k, v in state.items()})
    model["module.normalizer.new_mean"] = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    model["module.normalizer.new_std"] = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    model["module.attacker.normalizer.new_mean"] = model["module.normalizer.new_mean"]
    model["module.attacker.normalizer.new_std"] = model["module.normalizer.new_std"]
    path = tmp_path_factory.mktemp("real") / "resnet50_l2_eps0.05.ckpt"
    torch.save({"model": model, "epoch": 90}, path)
    return path, state


def test_real_checkpoint_download_resume_verify_convert_load(robustness_ckpt, tmp_path):
    path, state = robustness_ckpt
    data = path.read_bytes()
    assert len(data) > 90e6
    with FileServer() as server:
        server.routes["/resnet50_l2_eps0.05.ckpt"] = Route(data, cut_after=[len(data) // 3])
        t0 = time.monotonic()
        out = ws.download_weights(server.url("/resnet50_l2_eps0.05.ckpt"), tmp_path, backoff=0)
        elapsed = time.monotonic() - t0
        assert [h.status for h in server.gets("/resnet50_l2_eps0.05.ckpt")] == [200, 206]
    print(f"\n{len(data) / 1e6:.0f} MB checkpoint: download+resume+verify+convert {elapsed:.1f} s")
    assert out.suffix == ".safetensors" and ws.installed_weights_path(tmp_path) == out
    loaded = load_state_dict(out)
    model = ResNet50()
    model.load_state_dict(loaded, strict=True)
    for k in ("conv1.weight", "layer4.2.bn3.running_var", "fc.bias"):
        assert torch.equal(model.state_dict()[k], state[k])
    # the raw checkpoint is not kept: only the safetensors file remains
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ws.RECORD_FILE, ws.WEIGHTS_FILE])


def test_real_checkpoint_truncated_is_refused(robustness_ckpt, tmp_path):
    path, _ = robustness_ckpt
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: 50_000_000])
    with pytest.raises(WeightsError, match="cannot be used"):
        ws.install_weights_file(truncated, tmp_path / "cache")
    assert ws.installed_weights_path(tmp_path / "cache") is None
