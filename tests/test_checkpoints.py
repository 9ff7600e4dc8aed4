"""Loading ResNet-50 weights from every accepted file format, and refusing everything else.

The checkpoints are real files in the real formats (robustness-library .ckpt, torchvision .pth,
safetensors), written once per session from one seeded ResNet-50 (~100 MB each).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import time

import dill
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from magic_server.engine.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50
from magic_server.weights.checkpoints import expected_shapes, load_state_dict, read_weights
from magic_server.weights.errors import WeightsError


def _reference_model() -> ResNet50:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = ResNet50()
        for m in model.modules():  # make every buffer matter for the output
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.0)
                m.num_batches_tracked.fill_(777)
    return model.eval()


@functools.cache
def _scratch_model() -> ResNet50:
    return ResNet50().eval()


def _logits(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    model = _scratch_model()  # every tensor is overwritten by the strict load below
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model.eval()(x)


def _robustness_ckpt(state: dict[str, torch.Tensor], mean=IMAGENET_MEAN, std=IMAGENET_STD):
    model = {}
    for k, v in state.items():
        model[f"module.model.{k}"] = v
        # A different attacker copy: loading it instead of module.model would change the output.
        model[f"module.attacker.model.{k}"] = v + 1 if v.is_floating_point() else v
    for owner in ("module.normalizer", "module.attacker.normalize"):
        model[f"{owner}.new_mean"] = torch.tensor(mean).view(3, 1, 1)
        model[f"{owner}.new_std"] = torch.tensor(std).view(3, 1, 1)
    return {
        "model": model,
        "epoch": 90,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9,
                                                     "weight_decay": 1e-4, "params": [0, 1]}]},
        "schedule": {"milestones": collections.Counter({50: 1, 75: 1}), "gamma": 0.1,
                     "last_epoch": 90, "_step_count": 91},
    }


def _trained_optimizer_and_schedules(seed: int = 4321):
    """A real SGD (momentum 0.9, weight decay) over a ResNet-50's parameters after two steps,
    with the two schedules the robustness library makes: StepLR (--step-lr) and a cyclic
    LambdaLR (--custom-lr-multiplier cyclic), whose numpy learning rates end up as numpy
    float64 in the optimizer's and the scheduler's state."""
    model = ResNet50()
    generator = torch.Generator().manual_seed(seed)
    states = {}
    for kind in ("step", "cyclic"):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        if kind == "step":
            schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
        else:
            schedule = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda t: np.interp([t], [0, 90 * 4 // 15, 90], [0, 1, 0])[0])
        for _ in range(2):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=generator) * 1e-3
            opt.step()
            schedule.step()
        states[kind] = (opt.state_dict(), schedule.state_dict())
    return states


def _robustness_dill_ckpt(state, optimizer, schedule):
    """What robustness.train saves each epoch (sd_info), written as it writes it."""
    ckpt = _robustness_ckpt(state)
    ckpt["optimizer"] = optimizer
    ckpt["schedule"] = schedule
    ckpt["amp"] = "N/A"  # no apex mixed precision
    return ckpt


@pytest.fixture(scope="session")
def reference():
    model = _reference_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model(x)
    return state, x, logits


@pytest.fixture(scope="session")
def checkpoint_files(tmp_path_factory, reference):
    state, _, _ = reference
    d = tmp_path_factory.mktemp("checkpoints")
    files = {
        "robustness": d / "resnet50_l2_eps0.05.ckpt",
        "robustness-legacy": d / "legacy_format.ckpt",
        "torchvision": d / "resnet50.pth",
        "dataparallel": d / "resnet50_dp.pth.tar",
        "safetensors": d / "resnet50.safetensors",
        "safetensors-no-suffix": d / "resnet50.weights",
    }
    torch.save(_robustness_ckpt(state), files["robustness"])
    torch.save(_robustness_ckpt(state), files["robustness-legacy"],
               _use_new_zipfile_serialization=False)
    torch.save(state, files["torchvision"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "arch": "resnet50"},
               files["dataparallel"])
    save_file(state, str(files["safetensors"]))
    save_file(state, str(files["safetensors-no-suffix"]))
    return files


DILL_KINDS = ["step-zip", "step-legacy", "cyclic-zip", "cyclic-legacy"]


@pytest.fixture(scope="session")
def dill_checkpoints(tmp_path_factory, reference):
    """robustness-library checkpoints written exactly as it writes them: torch.save(sd_info,
    path, pickle_module=dill), in the zip and the legacy serialisation."""
    state, _, _ = reference
    d = tmp_path_factory.mktemp("dill_checkpoints")
    states = _trained_optimizer_and_schedules()
    files = {}
    for kind in DILL_KINDS:
        schedule_kind, fmt = kind.split("-")
        optimizer, schedule = states[schedule_kind]
        path = d / f"robustness_{kind}.ckpt"
        torch.save(_robustness_dill_ckpt(state, optimizer, schedule), path, pickle_module=dill,
                   _use_new_zipfile_serialization=fmt == "zip")
        files[kind] = path
    return files


@pytest.mark.parametrize("kind", DILL_KINDS)
def test_robustness_library_dill_checkpoints_load_safely(dill_checkpoints, reference, kind):
    _, x, expected = reference
    path = dill_checkpoints[kind]
    # the file really is what the library writes: a full optimizer with momentum buffers, a
    # scheduler state (numpy learning rates for the cyclic schedule), read back by dill
    raw = torch.load(path, weights_only=False, pickle_module=dill)
    assert set(raw) == {"model", "optimizer", "schedule", "epoch", "amp"}
    buffers = [s["momentum_buffer"] for s in raw["optimizer"]["state"].values()]
    assert len(buffers) == len(list(ResNet50().parameters()))
    assert raw["optimizer"]["param_groups"][0]["momentum"] == 0.9
    if kind.startswith("cyclic"):
        assert isinstance(raw["optimizer"]["param_groups"][0]["lr"], np.float64)
        assert isinstance(raw["schedule"]["_last_lr"][0], np.float64)
    else:
        assert raw["schedule"]["step_size"] == 30
    before = {str(g) for g in torch.serialization.get_safe_globals()}
    loaded = read_weights(path)  # weights_only=True inside
    assert loaded.layout == "robustness" and loaded.file_format == "torch"
    assert loaded.epoch == 90
    assert torch.equal(_logits(loaded.state_dict, x), expected)
    # the numpy allowance was scoped to that load
    after = {str(g) for g in torch.serialization.get_safe_globals()}
    assert after == before and not any("numpy" in g for g in after)


def test_numpy_scalars_alone_are_refused_by_plain_weights_only_loading(dill_checkpoints):
    """Why the loader allows numpy's scalar constructor: torch refuses it by default."""
    import pickle

    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(dill_checkpoints["cyclic-zip"], weights_only=True)


@pytest.mark.parametrize("payload, name", [
    (argparse.Namespace(lr=0.1), "argparse.Namespace"),  # harmless, but not allowed
    (np.arange(3), "dill._dill._create_array"),  # how dill writes a numpy array: not allowed
])
def test_other_globals_in_a_dill_checkpoint_are_still_refused(tmp_path, reference, payload,
                                                              name):
    state, _, _ = reference
    path = tmp_path / "robustness_extra.ckpt"
    ckpt = {"model": {f"module.model.{k}": v for k, v in list(state.items())[:3]},
            "epoch": 1, "args": payload}
    torch.save(ckpt, path, pickle_module=dill)
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    assert "Python objects that would have to be executed" in str(err.value)
    assert name in str(err.value)


def test_dill_pickled_function_is_refused_without_running_it(tmp_path):
    """dill pickles functions by value: such a file is refused, and nothing runs."""
    marker = tmp_path / "ran"

    def hook():  # pragma: no cover - must never run
        marker.touch()

    path = tmp_path / "with_function.ckpt"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "schedule": {"fn": hook}}, path,
               pickle_module=dill)
    with pytest.raises(WeightsError, match="Python objects that would have to be executed"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["robustness", "robustness-legacy", "torchvision",
                                  "dataparallel", "safetensors", "safetensors-no-suffix"])
def test_every_format_gives_identical_logits(checkpoint_files, reference, kind):
    state, x, expected = reference
    t0 = time.perf_counter()
    loaded = read_weights(checkpoint_files[kind])
    elapsed = time.perf_counter() - t0
    assert set(loaded.state_dict) == set(state)
    assert torch.equal(_logits(loaded.state_dict, x), expected)
    assert loaded.layout == ("robustness" if kind.startswith("robustness") else "torchvision")
    assert loaded.file_format == ("safetensors" if kind.startswith("safetensors") else "torch")
    if kind.startswith("robustness"):
        assert loaded.epoch == 90
    print(f"\n{kind}: read and validated in {elapsed:.2f} s")


def test_num_batches_tracked_may_be_absent(tmp_path, reference):
    state, x, expected = reference
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_nbt.safetensors"
    save_file(trimmed, str(path))
    loaded = load_state_dict(path)
    assert loaded["bn1.num_batches_tracked"].dtype == torch.long
    assert torch.equal(_logits(loaded, x), expected)


def test_model_prefix_without_attacker_is_stripped(tmp_path, reference):
    state, x, expected = reference
    path = tmp_path / "wrapped.safetensors"
    save_file({f"model.{k}": v for k, v in state.items()}, str(path))
    assert torch.equal(_logits(load_state_dict(path), x), expected)


def test_half_precision_weights_are_widened(tmp_path, reference):
    state, x, expected = reference
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    loaded = load_state_dict(path)
    assert all(v.dtype == torch.float32 for k, v in loaded.items() if "num_batches" not in k)
    assert torch.allclose(_logits(loaded, x), expected, rtol=0.05, atol=0.05)


class _RunsShellCommand:
    """Unpickling this object runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path, reference):
    state, _, _ = reference
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"model": {"conv1.weight": state["conv1.weight"]}, "hook": _RunsShellCommand(marker)},
               path)
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    message = str(err.value)
    assert "Python objects that would have to be executed" in message
    assert "safetensors" in message  # says how to convert it
    assert not marker.exists()

    # The same kind of file really does run code when unpickled without weights_only.
    proof_marker = tmp_path / "proof"
    proof = tmp_path / "proof.ckpt"
    torch.save({"hook": _RunsShellCommand(proof_marker)}, proof)
    torch.load(proof, weights_only=False)
    assert proof_marker.exists()


def test_wrong_shape_is_named(tmp_path, reference):
    state, _, _ = reference
    bad = dict(state)
    bad["fc.weight"] = torch.zeros(10, 2048)
    bad["fc.bias"] = torch.zeros(10)
    path = tmp_path / "ten_classes.pth"
    torch.save(bad, path)
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    message = str(err.value)
    assert "wrong shape" in message
    assert "fc.weight is (10, 2048), needs (1000, 2048)" in message
    assert "fc.bias" in message


def test_missing_and_unexpected_tensors_are_named(tmp_path, reference):
    state, _, _ = reference
    bad = {k: v for k, v in state.items() if k != "layer4.2.bn3.weight"}
    bad["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "odd.safetensors"
    save_file(bad, str(path))
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    message = str(err.value)
    assert "missing 1 tensor (layer4.2.bn3.weight)" in message
    assert "1 unexpected tensor (layer5.0.conv1.weight)" in message


def test_other_architecture_is_refused_briefly(tmp_path):
    path = tmp_path / "tiny_net.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)).state_dict(), path)
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    message = str(err.value)
    assert f"missing {len(expected_shapes()) - 53} tensors" in message  # 53 optional counters
    assert len(message) < 400  # brief: a few names, then a count
    assert "0.weight" in message


def test_non_imagenet_normalizer_is_refused(tmp_path, reference):
    state, _, _ = reference
    ckpt = _robustness_ckpt({"conv1.weight": state["conv1.weight"]}, mean=(0.5, 0.5, 0.5),
                            std=(0.5, 0.5, 0.5))
    path = tmp_path / "cifar_like.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    assert "mean (0.500, 0.500, 0.500), not ImageNet's (0.485, 0.456, 0.406)" in str(err.value)


# what torch or Python say inside when a file is unreadable: never shown to the user
INTERNAL_TEXT = ("index out of range", "PytorchStreamReader", "Traceback", "Error:", "pickle",
                 "UnpicklingError", "RuntimeError", "ValueError", "KeyError",
                 "invalid load key", "unpickling", "central directory", "EOF")


def _assert_plain(message: str) -> None:
    assert "not a readable" in message
    for text in INTERNAL_TEXT:
        assert text.lower() not in message.lower(), (text, message)
    assert len(message) < 300


@pytest.mark.parametrize("content, expected", [
    (b"", "it is empty (0 bytes)"),
    (b"hello, this is not a checkpoint", "it is a text file, starting 'hello, this is not a"),
    (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", "an HTML page"),
    (bytes(range(256)) * 8, "2,048 bytes of another format"),
    (np.random.default_rng(3).integers(0, 256, 10_000, dtype=np.uint8).tobytes()[1:],
     "of another format"),
])
def test_garbage_files_are_refused_plainly(tmp_path, content, expected):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    _assert_plain(str(err.value))
    assert expected in str(err.value)


@pytest.mark.parametrize("kind", ["torchvision", "robustness-legacy"])
def test_truncated_checkpoint_is_refused(tmp_path, checkpoint_files, kind):
    path = tmp_path / "half_downloaded.pth"
    path.write_bytes(checkpoint_files[kind].read_bytes()[:5_000_000])
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    _assert_plain(str(err.value))
    assert "damaged or incomplete" in str(err.value)
    assert "download it again" in str(err.value)


def test_truncated_safetensors_is_refused(tmp_path, checkpoint_files):
    path = tmp_path / "half.safetensors"
    path.write_bytes(checkpoint_files["safetensors"].read_bytes()[:5_000_000])
    with pytest.raises(WeightsError, match="not a readable safetensors file") as err:
        load_state_dict(path)
    assert "damaged or incomplete" in str(err.value)
    for text in INTERNAL_TEXT:
        assert text.lower() not in str(err.value).lower()


def test_non_dict_contents_are_refused(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(WeightsError, match="holds a Tensor, not a state dict"):
        load_state_dict(path)
    path2 = tmp_path / "no_tensors.pth"
    torch.save({"epoch": 3, "arch": "resnet50"}, path2)
    with pytest.raises(WeightsError, match="holds no tensors .*arch, epoch"):
        load_state_dict(path2)


def test_missing_file_says_how_to_get_weights(tmp_path):
    with pytest.raises(WeightsError) as err:
        load_state_dict(tmp_path / "nope.ckpt")
    message = str(err.value)
    assert "not found" in message
    assert "magic-installer weights" in message
    assert "--weights FILE" in message
    assert "--weights untrained" in message
