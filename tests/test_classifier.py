"""Where the classifier's weights come from (file, installed, downloaded, untrained) and devices."""

from __future__ import annotations

import types

import pytest
import torch
from gpu_tolerance import judgement_differs
from safetensors.torch import load_file, save_file

from magic_server import devices
from magic_server.devices import DeviceError, resolve_device
from magic_server.engine.resnet import IMAGENET_MEAN, ResNet50
from magic_server.weights.classifier import (
    UNTRAINED_LABEL,
    is_untrained,
    load_classifier,
    untrained_resnet50,
)
from magic_server.weights.errors import WeightsError


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A real ResNet-50 safetensors file whose weights differ from the untrained ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        model = ResNet50().eval()
    path = tmp_path_factory.mktemp("weights") / "resnet50_test.safetensors"
    save_file(model.state_dict(), str(path))
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
    return path, x, expected


class FakeStore:
    """Stands in for magic_server.weights.store: records calls, serves given paths."""

    WEIGHTS_LABEL = "quasi-robust ResNet-50 (l2, eps 0.05)"

    def __init__(self, installed=None, download_result=None, download_error=None) -> None:
        self.installed, self.download_result = installed, download_result
        self.download_error = download_error
        self.download_calls: list[dict] = []

    def module(self) -> types.ModuleType:
        m = types.ModuleType("magic_server.weights.store")
        m.WEIGHTS_LABEL = self.WEIGHTS_LABEL
        m.installed_weights_path = lambda cache_dir=None: self.installed
        m.download_weights = self.download_weights
        return m

    def download_weights(self, url=None, cache_dir=None, progress=None):
        self.download_calls.append({"progress": progress})
        if self.download_error:
            raise self.download_error
        return self.download_result


@pytest.fixture
def use_store(monkeypatch):
    from magic_server.weights import store as weights_store

    def install(store: FakeStore) -> FakeStore:
        fake = store.module()
        for name in ("installed_weights_path", "download_weights"):
            monkeypatch.setattr(weights_store, name, getattr(fake, name))
        return store
    return install


def test_untrained_is_deterministic_labelled_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    a, label_a = load_classifier("untrained", "cpu")
    assert torch.equal(torch.rand(3), expected_next)
    b, label_b = load_classifier("UNTRAINED", "cpu")
    assert label_a == label_b == UNTRAINED_LABEL and is_untrained(label_a)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.fc.weight, ResNet50().fc.weight)  # not just any fresh model
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_weights_from_a_file(weights_file):
    path, x, expected = weights_file
    model, label = load_classifier(str(path), "cpu")
    assert label == "ResNet-50 from resnet50_test.safetensors"
    assert not is_untrained(label)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(not t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    assert torch.equal(model.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    with torch.no_grad():
        assert torch.equal(model(x), expected)
        assert not torch.equal(untrained_resnet50().eval()(x), expected)


def test_robustness_checkpoint_is_labelled_as_such(tmp_path, weights_file):
    path, x, expected = weights_file
    state = load_file(str(path))
    model = {f"module.model.{k}": v for k, v in state.items()}
    model.update({f"module.attacker.model.{k}": v for k, v in state.items()})
    ckpt = tmp_path / "resnet50_l2_eps0.05.ckpt"
    torch.save({"model": model, "epoch": 90}, ckpt)
    classifier, label = load_classifier(str(ckpt), "cpu")
    assert label == "robust ResNet-50 from resnet50_l2_eps0.05.ckpt"
    with torch.no_grad():
        assert torch.equal(classifier(x), expected)


def test_bad_file_is_a_weights_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(WeightsError, match="not a readable"):
        load_classifier(str(bad), "cpu")
    with pytest.raises(WeightsError, match="not found.*magic-installer weights"):
        load_classifier(str(tmp_path / "missing.ckpt"), "cpu")


def test_installed_weights_are_used_without_download(use_store, weights_file):
    path, x, expected = weights_file
    store = use_store(FakeStore(installed=path))
    model, label = load_classifier(None, "cpu")
    assert label == FakeStore.WEIGHTS_LABEL
    assert store.download_calls == []
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_missing_weights_without_download_say_how_to_get_them(use_store):
    store = use_store(FakeStore(installed=None))
    with pytest.raises(WeightsError) as err:
        load_classifier(None, "cpu", allow_download=False)
    message = str(err.value)
    for hint in ("not installed", "magic-installer weights", "--weights FILE",
                 "--weights untrained"):
        assert hint in message
    assert store.download_calls == []


def test_missing_weights_are_downloaded_when_allowed(use_store, weights_file):
    path, x, expected = weights_file
    store = use_store(FakeStore(installed=None, download_result=path))

    def progress(done, total):
        pass

    model, label = load_classifier(None, "cpu", progress=progress)
    assert store.download_calls == [{"progress": progress}]
    assert label == FakeStore.WEIGHTS_LABEL
    with torch.no_grad():
        assert torch.equal(model(x), expected)


@pytest.mark.parametrize("error, expected", [
    (WeightsError("cannot download the weights from https://x: no network"), "no network"),
    (ConnectionResetError("reset by peer"), "could not download.*reset by peer.*magic-installer"),
])
def test_download_failures_are_weights_errors(use_store, error, expected):
    use_store(FakeStore(installed=None, download_error=error))
    with pytest.raises(WeightsError, match=expected):
        load_classifier(None, "cpu")


def test_with_the_real_weights_store(tmp_path, monkeypatch, weights_file):
    """The installer's store: an offline install, then load_classifier(None) finds it."""
    from magic_server.weights import store as weights_store
    path, x, expected = weights_file
    monkeypatch.setenv("MAGIC_CACHE_DIR", str(tmp_path / "cache"))
    assert weights_store.installed_weights_path() is None
    with pytest.raises(WeightsError, match="not installed"):
        load_classifier(None, "cpu", allow_download=False)
    weights_store.install_weights_file(path)
    model, label = load_classifier(None, "cpu", allow_download=False)
    assert not is_untrained(label)
    with torch.no_grad():
        assert torch.equal(model(x), expected)


# --- devices ---------------------------------------------------------------------------------


@pytest.fixture
def no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def test_cpu_and_auto_without_accelerators(no_accelerators):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("name, expected", [
    ("cuda", "sees no CUDA GPU"),
    ("cuda:1", "sees no CUDA GPU"),
    ("mps", "'mps' is not available"),
    ("gpu", "unknown device 'gpu'; choose auto, cpu, cuda, cuda:N or mps"),
    ("cuda:x", "unknown device"),
    ("", None),
])
def test_unavailable_or_unknown_devices(no_accelerators, name, expected):
    if expected is None:  # an empty name means auto
        assert resolve_device(name) == torch.device("cpu")
        return
    with pytest.raises(DeviceError, match=expected):
        resolve_device(name)


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="'cuda:2' does not exist: there are 2 CUDA GPUs"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.gpu  # run on a GPU machine with: pytest -m gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_classifier_on_a_real_gpu(weights_file):
    path, x, expected = weights_file
    device = resolve_device("auto")
    assert device.type == "cuda"
    model, _ = load_classifier(str(path), device)
    with torch.no_grad():
        got = model(x.to(device)).cpu()
    # TF32 convolutions: about 1e-2 from the CPU's float32, the same judgement
    assert judgement_differs(got, expected) is None, judgement_differs(got, expected)
