"""Model registry: discovery, sources, download cache, checksums, loading, registering."""

import hashlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
import torch
import yaml

import empanada_models as reg
from empanada_models import (
    ChecksumError,
    ModelDownloadError,
    ModelExistsError,
    ModelNotFoundError,
    _download,
    _registry,
)
from empanada_models._config import ConfigError, ModelConfig

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.(script|save)` is deprecated:DeprecationWarning")


class Tiny(torch.nn.Module):
    """The smallest model with the TorchScript contract of empanada models."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, render_steps: int = 2,
                interpolate_ins: bool = True) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        return {"sem_logits": y[:, :1], "ctr_hmp": y[:, 1:2], "offsets": y[:, 2:4]}


def save_tiny(path, channels=4):
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Tiny(channels)), str(path))
    return Path(path)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_dict(model, **changes):
    d = {"model": str(model), "model_quantized": None,
         "norms": {"mean": 0.5, "std": 0.1}, "padding_factor": 16, "thing_list": [1],
         "labels": [1], "class_names": {1: "mito"}, "description": "tiny test model",
         "FINETUNE": {"engine_params": {"label_divisor": 1000}}}
    d.update(changes)
    return d


def write_config(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("EMPANADA_HOME", str(home))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "all_proxy", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def tiny(tmp_path):
    return save_tiny(tmp_path / "tiny.pth")


class Server:
    """A loopback HTTP(S) server for a few in-memory files; counts requests."""

    def __init__(self, files, ssl_context=None):
        self.files = dict(files)
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                declared = len(body)
                if isinstance(body, tuple):  # (declared length, shorter body)
                    declared, body = body
                self.send_response(200)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if ssl_context else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tiny):
    s = Server({"/files/tiny.pth": tiny.read_bytes(), "/other/tiny.pth": b"other"})
    yield s
    s.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------- folders


def test_home_defaults_to_dot_empanada(monkeypatch, tmp_path):
    monkeypatch.delenv("EMPANADA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert reg.empanada_home() == tmp_path / ".empanada"
    assert reg.config_dir() == tmp_path / ".empanada" / "configs"
    assert reg.cache_dir() == tmp_path / ".empanada" / "cache"
    assert reg.models_dir() == tmp_path / ".empanada" / "models"


def test_home_follows_the_environment(home):
    assert reg.empanada_home() == home
    assert reg.config_dir() == home / "configs"


# ------------------------------------------------------------------------ discovery


def test_builtins_are_listed_first(home):
    write_config(home / "configs" / "Aaa.yaml", config_dict("x.pth"))
    names = reg.list_models()
    assert names[:3] == ["MitoLite_v1", "MitoNet_v1", "MitoNet_v1_mini"]
    assert names[-1] == "Aaa"


def test_listing_is_fresh(home):
    assert "Fresh" not in reg.list_models()
    write_config(home / "configs" / "Fresh.yaml", config_dict("x.pth"))
    assert "Fresh" in reg.list_models()
    (home / "configs" / "Fresh.yaml").unlink()
    assert "Fresh" not in reg.list_models()


def test_user_config_overrides_builtin(home, tiny):
    write_config(home / "configs" / "MitoNet_v1.yaml", config_dict(tiny, padding_factor=32))
    assert reg.list_models().count("MitoNet_v1") == 1
    assert reg.get_model_config("MitoNet_v1").padding_factor == 32
    assert _registry._discover()["MitoNet_v1"][1] == "user (overrides built-in)"


def test_default_model_is_registered(home):
    assert reg.get_default_model() == reg.DEFAULT_MODEL
    assert reg.DEFAULT_MODEL in reg.list_models()


def test_unknown_model_lists_available_names(home):
    with pytest.raises(ModelNotFoundError,
                       match="'Nope'.*MitoLite_v1, MitoNet_v1, MitoNet_v1_mini"):
        reg.get_model_config("Nope")


def test_invalid_user_config_raises_config_error(home):
    write_config(home / "configs" / "Bad.yaml", {"model": "x.pth"})
    assert "Bad" in reg.list_models()
    with pytest.raises(ConfigError, match="Bad.yaml.*missing required key"):
        reg.get_model_config("Bad")


# -------------------------------------------------------------------------- loading


def check_outputs(model):
    assert not model.training
    out = model(torch.zeros(1, 1, 16, 16), 2, True)
    assert set(out) == {"sem_logits", "ctr_hmp", "offsets"}
    assert out["offsets"].shape == (1, 2, 16, 16)


def test_load_relative_path_from_user_config(home, tmp_path):
    (home / "configs" / "weights").mkdir(parents=True)
    save_tiny(home / "configs" / "weights" / "t.pth")
    write_config(home / "configs" / "Rel.yaml", config_dict("weights/t.pth"))
    check_outputs(reg.load_model("Rel"))


def test_load_from_yaml_path_and_config(home, tmp_path, tiny):
    path = write_config(tmp_path / "cfgs" / "direct.yaml", config_dict(tiny))
    check_outputs(reg.load_model(path))
    check_outputs(reg.load_model(str(path)))
    check_outputs(reg.load_model(ModelConfig.from_dict(config_dict(tiny), name="mem")))


def test_load_file_url(home, tiny):
    cfg = ModelConfig.from_dict(config_dict(tiny.as_uri()), name="f")
    check_outputs(reg.load_model(cfg))


def test_checksum_is_verified_on_every_load(home, tiny):
    good = ModelConfig.from_dict(config_dict(tiny, sha256=sha(tiny)), name="good")
    check_outputs(reg.load_model(good))
    bad = ModelConfig.from_dict(config_dict(tiny, sha256="0" * 64), name="bad")
    with pytest.raises(ChecksumError, match=f"{tiny}.*expected sha256 0{{64}}, got {sha(tiny)}"):
        reg.load_model(bad)


def test_quantized_selection(home, tmp_path, tiny):
    quant = save_tiny(tmp_path / "q.pth", channels=6)
    cfg = ModelConfig.from_dict(config_dict(tiny, model_quantized=str(quant)), name="q")
    assert reg.load_model(cfg, quantized=True).conv.weight.shape[0] == 6
    assert reg.load_model(cfg).conv.weight.shape[0] == 4


def test_quantized_needs_quantized_weights(home, tiny):
    cfg = ModelConfig.from_dict(config_dict(tiny), name="noq")
    with pytest.raises(ValueError, match="no quantized weights"):
        reg.load_model(cfg, quantized=True)


def test_quantized_is_cpu_only(home, tmp_path, tiny):
    cfg = ModelConfig.from_dict(config_dict(tiny, model_quantized=str(tiny)), name="q")
    with pytest.raises(ValueError, match="CPU only"):
        reg.load_model(cfg, quantized=True, device="cuda")


def test_bad_device(home, tiny):
    cfg = ModelConfig.from_dict(config_dict(tiny), name="d")
    with pytest.raises(ValueError, match="`device`"):
        reg.load_model(cfg, device="toaster")


def test_missing_config_file(home, tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found.*nope.yaml"):
        reg.load_model(tmp_path / "nope.yaml")


def test_name_or_config_type(home):
    with pytest.raises(TypeError, match="a model must be given"):
        reg.load_model(42)


def test_missing_local_weights(home, tmp_path):
    path = write_config(home / "configs" / "Gone.yaml", config_dict(tmp_path / "gone.pth"))
    with pytest.raises(FileNotFoundError, match=f"gone.pth.*{path.name}"):
        reg.load_model("Gone")


@pytest.mark.parametrize("kind", ["garbage", "pickle"])
def test_non_torchscript_files_are_refused(home, tmp_path, kind):
    path = tmp_path / "w.pth"
    if kind == "garbage":
        path.write_bytes(b"not a model" * 10)
    else:
        torch.save({"weight": torch.zeros(2)}, path)
    cfg = ModelConfig.from_dict(config_dict(path), name="w")
    with pytest.raises(RuntimeError, match="not a loadable TorchScript model"):
        reg.load_model(cfg)


def test_unsupported_scheme(home):
    cfg = ModelConfig.from_dict(config_dict("ftp://host/x.pth"), name="ftp")
    with pytest.raises(ConfigError, match="unsupported model source"):
        reg.load_model(cfg)


# ------------------------------------------------------------------- download cache


def test_download_once_into_the_cache(home, server, tiny):
    url = server.url("/files/tiny.pth?download=1")
    cfg = ModelConfig.from_dict(config_dict(url, sha256=sha(tiny)), name="remote")
    assert reg.cached_model_file(cfg) is None
    calls = []
    check_outputs(reg.load_model(cfg, progress=lambda done, total: calls.append((done, total))))
    assert len(server.requests) == 1
    size = tiny.stat().st_size
    assert calls[0] == (0, size)
    assert calls[-1] == (size, size)
    cached = reg.cached_model_file(cfg)
    assert cached.parent == home / "cache"
    assert cached.name.startswith("tiny-")
    assert cached.name.endswith(".pth")
    assert sha(cached) == sha(tiny)
    check_outputs(reg.load_model(cfg))
    assert len(server.requests) == 1  # second load: no request
    assert sorted(p.name for p in (home / "cache").iterdir()) == [cached.name]


def test_same_basename_different_urls_do_not_collide(home, server):
    a = _download._cache_path(server.url("/files/tiny.pth"))
    b = _download._cache_path(server.url("/other/tiny.pth"))
    assert a != b
    assert a.suffix == b.suffix == ".pth"


def test_download_checksum_mismatch_keeps_nothing(home, server):
    url = server.url("/files/tiny.pth")
    cfg = ModelConfig.from_dict(config_dict(url, sha256="f" * 64), name="remote")
    with pytest.raises(ChecksumError, match=f"{url}.*expected sha256 f{{64}}"):
        reg.load_model(cfg)
    assert list((home / "cache").iterdir()) == []


def test_http_error_names_the_url(home, server):
    url = server.url("/missing.pth")
    cfg = ModelConfig.from_dict(config_dict(url), name="remote")
    with pytest.raises(ModelDownloadError) as info:
        reg.load_model(cfg)
    msg = str(info.value)
    assert url in msg
    assert "404" in msg
    assert "empanada models register remote" in msg
    assert "--model-file" in msg
    assert list((home / "cache").iterdir()) == []


def test_truncated_download_keeps_nothing(home, tiny):
    s = Server({"/short.pth": (10_000, b"only a few bytes")})
    try:
        cfg = ModelConfig.from_dict(config_dict(s.url("/short.pth")), name="short")
        with pytest.raises(ModelDownloadError, match="short.pth.*(part-way|cut short)"):
            reg.fetch_model_file(cfg)
    finally:
        s.close()
    assert list((home / "cache").iterdir()) == []


def test_bad_ssl_cert_file(home, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    cfg = ModelConfig.from_dict(config_dict("https://127.0.0.1:9/x.pth"), name="tls")
    with pytest.raises(ModelDownloadError, match="SSL_CERT_FILE=.*missing.pem"):
        reg.fetch_model_file(cfg)


def test_offline_message(home):
    url = f"http://127.0.0.1:{free_port()}/MitoNet_v1.pth"
    cfg = ModelConfig.from_dict(config_dict(url), name="remote")
    with pytest.raises(ModelDownloadError, match="offline") as info:
        reg.fetch_model_file(cfg)
    assert url in str(info.value)
    assert "--model-file" in str(info.value)


def test_quantized_download_hint(home):
    url = f"http://127.0.0.1:{free_port()}/q.pth"
    cfg = ModelConfig.from_dict(config_dict("x.pth", model_quantized=url), name="remote")
    with pytest.raises(ModelDownloadError, match="--quantized-file"):
        reg.fetch_model_file(cfg, quantized=True)


def test_corrupted_cache_is_reported(home, server, tiny):
    url = server.url("/files/tiny.pth")
    cfg = ModelConfig.from_dict(config_dict(url, sha256=sha(tiny)), name="remote")
    cached = reg.fetch_model_file(cfg)
    cached.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match=f"Delete {cached}"):
        reg.load_model(cfg)


def test_file_cached_by_the_original_is_reused(home, tiny):
    url = f"http://127.0.0.1:{free_port()}/files/MitoNet_v1.pth?download=1"
    home.mkdir()
    shutil.copy(tiny, home / "MitoNet_v1.pth")
    cfg = ModelConfig.from_dict(config_dict(url), name="legacy")
    assert reg.cached_model_file(cfg) == home / "MitoNet_v1.pth"
    check_outputs(reg.load_model(cfg))


def _self_signed(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return key, cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_is_verified_and_ssl_cert_file_is_honoured(home, tmp_path, tiny, monkeypatch):
    key, cert = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s = Server({"/tiny.pth": tiny.read_bytes()}, ssl_context=ctx)
    try:
        cfg = ModelConfig.from_dict(config_dict(s.url("/tiny.pth")), name="tls")
        with pytest.raises(ModelDownloadError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            reg.fetch_model_file(cfg)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        check_outputs(reg.load_model(cfg))
    finally:
        s.close()


# ---------------------------------------------------------------------- registering


def test_register_copies_weights(home, tmp_path, tiny):
    src = write_config(tmp_path / "train" / "out.yaml", config_dict("/nowhere/x.pth"))
    cfg = reg.register_model("Mine", src, model_file=tiny)
    dest = home / "models" / "Mine.pth"
    assert cfg.model == str(dest)
    assert dest.read_bytes() == tiny.read_bytes()
    assert cfg.sha256 == sha(tiny)
    assert cfg.source == home / "configs" / "Mine.yaml"
    on_disk = yaml.safe_load((home / "configs" / "Mine.yaml").read_text())
    assert on_disk["model"] == str(dest)
    assert on_disk["model_quantized"] is None
    assert on_disk["class_names"] == {1: "mito"}
    assert "Mine" in reg.list_models()
    check_outputs(reg.load_model("Mine"))


def test_register_quantized_file(home, tmp_path, tiny):
    quant = save_tiny(tmp_path / "q.pth", channels=6)
    cfg = reg.register_model("Q", config_dict(tiny), quantized_file=quant)
    assert cfg.model == str(tiny)  # not copied: no model_file given
    assert cfg.model_quantized == str(home / "models" / "Q_quantized.pth")
    assert cfg.sha256_quantized == sha(quant)
    assert reg.load_model("Q", quantized=True).conv.weight.shape[0] == 6


def test_register_relative_path_becomes_absolute(home, tmp_path):
    (tmp_path / "train").mkdir()
    save_tiny(tmp_path / "train" / "w.pth")
    src = write_config(tmp_path / "train" / "out.yaml", config_dict("w.pth"))
    cfg = reg.register_model("RelReg", src)
    assert cfg.model == str(tmp_path / "train" / "w.pth")
    check_outputs(reg.load_model("RelReg"))


def test_register_url_is_kept(home):
    cfg = reg.register_model("Web", config_dict("https://example.org/w.pth"))
    assert cfg.model == "https://example.org/w.pth"
    assert not (home / "models").exists()
    cfg = reg.register_model("Web2", config_dict("x.pth"),
                             model_file="https://example.org/v2.pth")
    assert cfg.model == "https://example.org/v2.pth"


def test_register_model_config_object(home, tiny):
    cfg = ModelConfig.from_dict(config_dict(tiny), name="orig")
    new = reg.register_model("Obj", cfg)
    assert new.name == "Obj"
    assert reg.get_model_config("Obj").model == str(tiny)


def test_register_existing_name_needs_overwrite(home, tmp_path, tiny):
    reg.register_model("Dup", config_dict(tiny))
    with pytest.raises(ModelExistsError, match="'Dup'.*overwrite"):
        reg.register_model("Dup", config_dict(tiny, padding_factor=32))
    assert reg.get_model_config("Dup").padding_factor == 16
    reg.register_model("Dup", config_dict(tiny, padding_factor=32), overwrite=True)
    assert reg.get_model_config("Dup").padding_factor == 32


def test_register_builtin_name_needs_overwrite(home, tiny):
    with pytest.raises(ModelExistsError):
        reg.register_model("MitoNet_v1", config_dict(tiny))
    reg.register_model("MitoNet_v1", config_dict(tiny), overwrite=True)
    assert reg.get_model_config("MitoNet_v1").model == str(tiny)


@pytest.mark.parametrize("name", ["", "a/b", "../x", "a\\b", "with space", ".hidden", None])
def test_register_rejects_invalid_names(home, tiny, name):
    with pytest.raises(ValueError, match="invalid model name"):
        reg.register_model(name, config_dict(tiny))


def test_register_missing_model_file(home, tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        reg.register_model("M", config_dict(tiny), model_file=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="missing file.*gone.pth"):
        reg.register_model("M", config_dict(tmp_path / "gone.pth"))
    assert "M" not in reg.list_models()


def test_register_bad_config_type(home):
    with pytest.raises(TypeError, match="`config`"):
        reg.register_model("M", 3)


def test_register_invalid_config(home, tmp_path, tiny):
    src = write_config(tmp_path / "bad.yaml", config_dict(tiny, padding_factor="x"))
    with pytest.raises(ConfigError, match="bad.yaml.*padding_factor"):
        reg.register_model("M", src)


# ----------------------------------------------------------------------------- info


def test_model_info_local(home, tiny):
    reg.register_model("Info", config_dict(tiny), model_file=tiny)
    info = reg.model_info("Info")
    assert info["name"] == "Info"
    assert info["origin"] == "user"
    assert info["cached"] is True
    assert info["num_params"] == 4 * 9 + 4
    assert info["label_divisor"] == 1000
    assert info["classes"] == [{"id": 1, "name": "mito", "kind": "instance",
                                "first_label": 1001}]
    assert info["patch_multiple"] == 16
    assert any("divisible by 16" in h for h in info["finetune_hints"])
    assert any("class_id * 1000 + instance_id" in h for h in info["finetune_hints"])
    assert info["weights_error"] is None


def test_model_info_builtin_not_downloaded(home):
    info = reg.model_info("MitoNet_v1_mini")
    assert info["origin"] == "built-in"
    assert info["cached"] is False
    assert info["num_params"] == 27_350_786  # from the MODEL block, no download
    assert info["num_params_from"] == "architecture"
    assert info["arch"] == "PanopticBiFPNPR"
    assert info["patch_multiple"] == 128
    assert info["model"].startswith("https://zenodo.org/")


def test_model_info_bifpn_and_semantic_classes(home, tiny):
    cfg = ModelConfig.from_dict(config_dict(
        tiny, arch="PanopticBiFPNPR", labels=[1, 2], thing_list=[1],
        class_names={1: "mito", 2: "er"}, FINETUNE=None), name="multi")
    info = reg.model_info(cfg)
    assert info["origin"] == "in memory"
    assert info["patch_multiple"] == 128
    assert info["label_divisor"] == 1000
    assert info["classes"][1] == {"id": 2, "name": "er", "kind": "semantic",
                                  "first_label": 2000}
    assert any("semantic segmentation: label it 2000" in h for h in info["finetune_hints"])


def test_model_info_reports_bad_weights(home, tiny):
    cfg = ModelConfig.from_dict(config_dict(tiny, sha256="0" * 64), name="badw")
    info = reg.model_info(cfg)
    assert info["num_params"] is None
    assert "checksum mismatch" in info["weights_error"]


def test_download_file_caches_once_verifies_and_explains_offline(home, server, tiny):
    url = server.url("/files/tiny.pth")
    path = reg.download_file(url, what="encoder weights")
    assert path.read_bytes() == tiny.read_bytes()
    assert path.parent == home / "cache"
    assert reg.download_file(url) == path
    assert len(server.requests) == 1  # the second call used the cache
    with pytest.raises(ChecksumError, match="encoder weights"):
        reg.download_file(url, what="encoder weights", expected="0" * 64)
    # same basename, other URL: its own cache file
    assert reg.download_file(server.url("/other/tiny.pth")).read_bytes() == b"other"
    with pytest.raises(ModelDownloadError, match="127.0.0.1:9.*offline.*local path"):
        reg.download_file("http://127.0.0.1:9/enc.pth", hint="Use a local path.")


# ------------------------------------------------------------------------- archive


def test_archive_moves_config_and_own_weights_and_keeps_outside_files(home, tmp_path, tiny):
    reg.register_model("Mine", config_dict(tiny), model_file=tiny)
    reg.register_model("Linked", config_dict(tiny))  # weights stay where they are
    assert {"Mine", "Linked"} <= set(reg.list_models())
    dest = reg.archive_model("Mine")
    assert "Mine" not in reg.list_models()
    assert (dest / "Mine.yaml").is_file()
    assert (dest / "Mine.pth").is_file()
    assert not (reg.models_dir() / "Mine.pth").exists()
    dest2 = reg.archive_model("Linked")
    assert tiny.is_file()  # not ours: left in place
    assert sorted(p.name for p in dest2.iterdir()) == ["Linked.yaml"]
    # the same name archived twice gets a new folder
    reg.register_model("Mine", config_dict(tiny))
    assert reg.archive_model("Mine") != dest


def test_archive_refuses_builtins_and_unknown_names(home):
    with pytest.raises(ValueError, match="built-in"):
        reg.archive_model("MitoLite_v1")
    with pytest.raises(reg.ModelNotFoundError, match="available models"):
        reg.archive_model("Nope")


def test_archiving_an_override_lists_the_builtin_again(home, tiny):
    reg.register_model("MitoNet_v1", config_dict(tiny, padding_factor=32), overwrite=True)
    assert reg.get_model_config("MitoNet_v1").padding_factor == 32
    reg.archive_model("MitoNet_v1")
    assert reg.get_model_config("MitoNet_v1").padding_factor != 32


def test_resolve_model_config_is_the_one_front_door(home, tmp_path, monkeypatch):
    cfg = reg.resolve_model_config()
    assert cfg.name == reg.get_default_model()
    assert reg.resolve_model_config(cfg) is cfg
    registered = write_config(home / "configs" / "Tiny.yaml", config_dict(tmp_path / "w.pth"))
    assert reg.resolve_model_config("Tiny").source == registered
    # a YAML path, with or without a folder, and a file without the suffix
    elsewhere = write_config(tmp_path / "cfgs" / "Other.yaml", config_dict(tmp_path / "w.pth"))
    assert reg.resolve_model_config(elsewhere).name == "Other"
    assert reg.resolve_model_config(str(elsewhere)).name == "Other"
    plain = tmp_path / "cfgs" / "plain_config"
    plain.write_text(elsewhere.read_text())
    assert reg.resolve_model_config(str(plain)).name == "plain_config"
    monkeypatch.chdir(tmp_path / "cfgs")
    assert reg.resolve_model_config("Other.yaml").name == "Other"
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        reg.resolve_model_config("missing.yaml")
    with pytest.raises(FileNotFoundError, match="no/such"):
        reg.resolve_model_config("no/such")
    with pytest.raises(reg.ModelNotFoundError, match="Tiny"):
        reg.resolve_model_config("NotAModel")
    with pytest.raises(TypeError, match="a model must be given"):
        reg.resolve_model_config(3)


def test_patch_multiple_comes_from_the_catalogue(home, tmp_path):
    base = config_dict(tmp_path / "w.pth", padding_factor=16)
    pdl = reg.ModelConfig.from_dict({**base, "MODEL": {"arch": "PanopticDeepLabPR"}}, name="a")
    bifpn = reg.ModelConfig.from_dict({**base, "MODEL": {"arch": "PanopticBiFPNPR"}}, name="b")
    plain = reg.ModelConfig.from_dict(base, name="c")
    assert [reg.patch_multiple(c) for c in (pdl, bifpn, plain)] == [16, 128, 16]
    assert reg.config_architecture(bifpn) == "PanopticBiFPNPR"
    assert reg.config_architecture(plain) is None
    assert reg.model_info(bifpn)["patch_multiple"] == 128
