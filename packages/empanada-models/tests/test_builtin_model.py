"""The built-in default model, MitoLite_v1: shipped weights, offline loading, contract."""

import hashlib

import pytest

torch = pytest.importorskip("torch")

import empanada_models as em  # noqa: E402
from empanada_models import _home  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_default_is_the_builtin_offline_model(home):
    assert em.get_default_model() == "MitoLite_v1"
    cfg = em.get_model_config("MitoLite_v1")
    weights = _home.BUILTIN_CONFIG_DIR.parent / "weights" / "MitoLite_v1.pth"
    assert weights.is_file()
    assert em.cached_model_file(cfg).resolve() == weights.resolve()
    assert weights.stat().st_size <= 60e6
    assert cfg.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert list(cfg.labels) == [1]
    assert "mito" in dict(cfg.class_names).values()
    assert cfg.padding_factor == 16


def test_loads_without_network_and_keeps_the_contract(home, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the built-in model must not touch the network")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    model = em.load_model("MitoLite_v1", device="cpu")
    x = torch.zeros(1, 1, 64, 96)
    with torch.no_grad():
        out = model(x, 2, True)
    assert set(out) >= {"sem_logits", "ctr_hmp", "offsets"}
    assert tuple(out["sem_logits"].shape) == (1, 1, 64, 96)
    assert tuple(out["offsets"].shape) == (1, 2, 64, 96)
    assert not (home / "cache").exists()  # nothing downloaded or copied


def test_info_describes_training_data_and_scores(home):
    info = em.model_info("MitoLite_v1")
    text = info["description"].lower()
    for word in ("lucchi", "drosophila", "fafb", "f1", "pq", "license"):
        assert word in text
    assert info["origin"] == "built-in"
    assert info["cached"] is True
    assert info["num_params_from"] == "weights"
    assert 1e6 < info["num_params"] < 16e6
