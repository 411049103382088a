"""Model configs, weights and bundles from strangers (issue: reliability, part 0)."""

import os
import pickle
import time
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import empanada_models as em  # noqa: E402
from empanada_models.testing import write_test_model  # noqa: E402

# 9**8 = 43 million strings when walked: seconds to minutes before the fix
_ALIAS_BOMB = "\n".join(
    ["bomb:", '  a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    + [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
)


class _Payload:
    """Unpickling this would create a file: proof that nothing ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_alias_bomb_config_is_refused_at_once(tmp_path, home):
    good = write_test_model(tmp_path, "Blob")
    bomb = tmp_path / "Bomb.yaml"
    bomb.write_text(good.read_text() + "\n" + _ALIAS_BOMB + "\n")
    start = time.perf_counter()
    with pytest.raises(em.ConfigError, match="aliases"):
        em.ModelConfig.from_yaml(bomb)
    assert time.perf_counter() - start < 5  # a bound far above the ~ms it takes


def test_alias_bomb_in_the_model_home_does_not_slow_other_models(tmp_path, home, capsys):
    from empanada_models.cli import main

    (home / "configs").mkdir(parents=True)
    good = write_test_model(tmp_path, "Blob")
    (home / "configs" / "Bomb.yaml").write_text(good.read_text() + "\n" + _ALIAS_BOMB + "\n")
    start = time.perf_counter()
    assert main(["models", "list"]) == 0
    assert time.perf_counter() - start < 5
    assert "aliases" in capsys.readouterr().out  # listed as invalid, not parsed for minutes


def test_alias_bomb_bundle_is_refused(tmp_path, home):
    good = write_test_model(tmp_path, "Blob")
    bundle = tmp_path / "Bomb.empanada"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("Bomb.yaml", good.read_text().replace("Blob.pth", "Bomb.pth")
                    + "\n" + _ALIAS_BOMB + "\n")
        zf.write(tmp_path / "Blob.pth", "Bomb.pth")
    with pytest.raises(em.BundleError, match="aliases"):
        em.import_bundle(bundle)


@pytest.mark.parametrize("kind", ["random", "pickle", "state_dict", "truncated"])
def test_register_refuses_files_that_are_not_torchscript(tmp_path, home, kind):
    config = write_test_model(tmp_path, "Blob")
    bad = tmp_path / f"{kind}.pth"
    marker = tmp_path / "payload-ran"
    if kind == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickle":
        bad.write_bytes(pickle.dumps(_Payload(str(marker))))
    elif kind == "state_dict":
        torch.save({"w": torch.zeros(3)}, bad)
    else:
        data = (tmp_path / "Blob.pth").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(em.WeightsFileError, match="not a TorchScript|damaged|does not load"):
        em.register_model("Bad", config, model_file=bad)
    assert not marker.exists()
    assert "Bad" not in em.list_models()
    assert not (home / "models" / "Bad.pth").exists()


def test_export_refuses_a_broken_model_file(tmp_path, home):
    config = write_test_model(tmp_path, "Blob")
    (tmp_path / "Blob.pth").write_bytes(b"\x00" * 100)  # damaged after registration
    with pytest.raises(em.WeightsFileError):
        em.export_bundle(config, tmp_path / "out.empanada")
    assert not (tmp_path / "out.empanada").exists()


def test_left_over_weights_of_a_killed_import_do_not_block_it(tmp_path, home):
    config = write_test_model(tmp_path, "Blob")
    bundle = em.export_bundle(config, tmp_path / "Mine.empanada")
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (home / "models").mkdir(parents=True)
    # what an import killed after moving the weights and before writing the config leaves
    (home / "models" / f".import-Mine.{int(dead.stdout)}-0123456789ab").mkdir()
    (home / "models" / "Mine.pth").write_bytes(b"half a move")
    imported = em.import_bundle(bundle)
    assert imported.name == "Mine"
    em.load_model("Mine")


def test_unknown_architecture_is_refused(tmp_path):
    config = write_test_model(tmp_path, "Blob")
    text = config.read_text() + "\narch: PanopticDeepLabXL\n"
    config.write_text(text)
    with pytest.raises(em.ConfigError, match="PanopticDeepLabXL"):
        em.ModelConfig.from_yaml(config)


def test_every_catalogue_entry_builds_its_named_architecture():
    for name, entry in em.ARCHITECTURES.items():
        assert entry.name == name
        assert callable(entry.builder)
        assert set(entry.training_defaults) - {"num_classes"} <= set(entry.keyword_names())
        model = em.build_model(name, encoder="resnet18", num_classes=1)
        assert model.arch == name


def test_config_with_more_classes_than_the_network_fails_clearly(tmp_path):
    import empanada_infer as ei

    config_path = write_test_model(tmp_path, "Blob")
    data = em.load_yaml(config_path.read_text())
    data.update(labels=[1, 2], thing_list=[1, 2], class_names={1: "mito", 2: "nuc"})
    config = em.ModelConfig.from_dict(data, name="Blob2", source=tmp_path / "Blob.yaml")
    seg = ei.Segmenter(em.load_model(config), config, device="cpu")
    with pytest.raises(ValueError, match="2 classes .* 1 output channel"):
        seg.segment_image(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))


# ------------------------------------------------------------------- downloads

class _TrickleServer:
    """HTTP on 127.0.0.1 that sends headers, then a few bytes every `every` seconds."""

    def __init__(self, every=0.1, chunk=b"x" * 8, declared=100_000, max_seconds=20):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                deadline = time.monotonic() + max_seconds  # bounded, stops by itself
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:  # the client gave up
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_trickling_download_fails_and_leaves_no_temp_file(home, monkeypatch):
    import empanada_models._download as registry

    monkeypatch.setattr(registry, "_STALL_WINDOW_S", 0.5)
    monkeypatch.setattr(registry, "_STALL_MIN_BYTES", 1000)
    server = _TrickleServer()
    try:
        start = time.perf_counter()
        with pytest.raises(em.ModelDownloadError, match="stalled"):
            em.download_file(server.url("slow.pth"), what="test weights")
        assert time.perf_counter() - start < 10
    finally:
        server.close()
    assert [p.name for p in em.cache_dir().iterdir()] == []


def test_temp_file_of_a_killed_download_is_cleaned_up(home, monkeypatch):
    import subprocess
    import sys

    import empanada_models._download as registry

    monkeypatch.setattr(registry, "_STALL_WINDOW_S", 0.3)
    monkeypatch.setattr(registry, "_STALL_MIN_BYTES", 10**9)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    server = _TrickleServer()
    try:
        url = server.url("w.pth")
        dest = registry._cache_path(url)
        dest.parent.mkdir(parents=True)
        left = dest.with_name(f".{dest.name}.{pid}-0123456789ab.tmp")  # a killed writer's
        left.write_bytes(b"partial")
        live = dest.with_name(f".{dest.name}.{os.getpid()}-0123456789ab.tmp")  # ours: kept
        live.write_bytes(b"in progress")
        with pytest.raises(em.ModelDownloadError):
            em.download_file(url)
    finally:
        server.close()
    assert not left.exists()
    assert live.exists()
