"""``.empanada`` bundles: export, import, and every rejection of an unsafe bundle."""

import hashlib
import stat
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import empanada_models as reg
from empanada_models import ChecksumError, ModelExistsError
from empanada_models._bundle import BundleError, export_bundle, import_bundle
from empanada_models._config import ModelConfig

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.(script|save)` is deprecated:DeprecationWarning")


class Tiny(torch.nn.Module):
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


def sha(data):
    return hashlib.sha256(data).hexdigest()


def config_dict(model, **changes):
    d = {"model": str(model), "model_quantized": None,
         "norms": {"mean": 0.5, "std": 0.1}, "padding_factor": 16, "thing_list": [1],
         "labels": [1], "class_names": {1: "mito"}, "description": "tiny"}
    d.update(changes)
    return d


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("EMPANADA_HOME", str(home))
    return home


@pytest.fixture
def registered(home, tmp_path):
    model = save_tiny(tmp_path / "w.pth")
    quant = save_tiny(tmp_path / "q.pth", channels=6)
    reg.register_model("Src", config_dict(model), model_file=model, quantized_file=quant)
    return model, quant


def user_state(home):
    """Everything the registry has written, to check that a rejection wrote nothing."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []


# --------------------------------------------------------------------------- export


def test_export_writes_the_original_layout(home, tmp_path, registered):
    model, quant = registered
    out = export_bundle("Src", tmp_path / "shared.empanada")
    assert out == tmp_path / "shared.empanada"
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["shared.pth", "shared.yaml", "shared_quantized.pth"]
        cfg = yaml.safe_load(zf.read("shared.yaml"))
        assert zf.read("shared.pth") == model.read_bytes()
        assert zf.read("shared_quantized.pth") == quant.read_bytes()
    assert cfg["model"] == "shared.pth"
    assert cfg["model_quantized"] == "shared_quantized.pth"
    assert cfg["sha256"] == sha(model.read_bytes())
    assert cfg["sha256_quantized"] == sha(quant.read_bytes())
    assert cfg["class_names"] == {1: "mito"}
    assert [p.name for p in tmp_path.glob(".*")] == []  # no temporary files left


def test_export_into_a_folder(home, tmp_path, registered):
    (tmp_path / "out").mkdir()
    out = export_bundle("Src", tmp_path / "out")
    assert out == tmp_path / "out" / "Src.empanada"


def test_export_without_quantized_weights(home, tmp_path):
    model = save_tiny(tmp_path / "w.pth")
    out = export_bundle(ModelConfig.from_dict(config_dict(model), name="plain"),
                        tmp_path / "plain.empanada")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["plain.pth", "plain.yaml"]
        assert yaml.safe_load(zf.read("plain.yaml"))["model_quantized"] is None


def test_export_refuses_to_overwrite(home, tmp_path, registered):
    out = tmp_path / "x.empanada"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="--force"):
        export_bundle("Src", out)
    assert out.read_bytes() == b"keep"
    export_bundle("Src", out, overwrite=True)
    assert zipfile.is_zipfile(out)


def test_export_needs_the_suffix(home, tmp_path, registered):
    with pytest.raises(ValueError, match=".empanada"):
        export_bundle("Src", tmp_path / "x.zip")


def test_export_unknown_model(home, tmp_path):
    with pytest.raises(reg.ModelNotFoundError):
        export_bundle("Nope", tmp_path / "x.empanada")


# --------------------------------------------------------------------------- import


def test_round_trip(home, tmp_path, registered):
    model, quant = registered
    out = export_bundle("Src", tmp_path / "shared.empanada")
    cfg = import_bundle(out, name="Copy")
    assert cfg.model == str(home / "models" / "Copy.pth")
    assert cfg.model_quantized == str(home / "models" / "Copy_quantized.pth")
    assert (home / "models" / "Copy.pth").read_bytes() == model.read_bytes()
    assert "Copy" in reg.list_models()
    loaded = reg.load_model("Copy")
    assert loaded(torch.zeros(1, 1, 8, 8), 2, True)["sem_logits"].shape == (1, 1, 8, 8)
    assert reg.load_model("Copy", quantized=True).conv.weight.shape[0] == 6
    assert not any(p.name.startswith(".import") for p in (home / "models").iterdir())


def test_default_name_is_the_file_name(home, tmp_path, registered):
    out = export_bundle("Src", tmp_path / "Shared_v2.empanada")
    assert import_bundle(out).name == "Shared_v2"


def test_imports_a_bundle_made_by_the_original(home, tmp_path):
    # The original names the config after the bundle and keeps the weights' basename.
    data = save_tiny(tmp_path / "w.pth").read_bytes()
    bundle = tmp_path / "NewModel.empanada"
    cfg = config_dict("PanopticDeepLabPR_NewModel.pth")
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("NewModel.yaml", yaml.dump(cfg))
        zf.writestr("PanopticDeepLabPR_NewModel.pth", data)
    imported = import_bundle(bundle, name="Orig")
    assert imported.sha256 == sha(data)
    assert (home / "models" / "Orig.pth").read_bytes() == data


def test_existing_name_needs_force(home, tmp_path, registered):
    out = export_bundle("Src", tmp_path / "Src.empanada")
    before = user_state(home)
    with pytest.raises(ModelExistsError, match="'Src'"):
        import_bundle(out)
    assert user_state(home) == before
    cfg = import_bundle(out, force=True)
    assert cfg.model == str(home / "models" / "Src.pth")


def test_existing_weight_files_need_force(home, tmp_path, registered):
    out = export_bundle("Src", tmp_path / "New.empanada")
    (home / "models" / "New.pth").write_bytes(b"someone's file")
    with pytest.raises(ModelExistsError, match="New.pth"):
        import_bundle(out)
    assert (home / "models" / "New.pth").read_bytes() == b"someone's file"
    import_bundle(out, force=True)
    assert (home / "models" / "New.pth").read_bytes() != b"someone's file"


def test_missing_bundle(home, tmp_path):
    with pytest.raises(FileNotFoundError):
        import_bundle(tmp_path / "none.empanada")


def test_invalid_name(home, tmp_path, registered):
    out = export_bundle("Src", tmp_path / "x.empanada")
    with pytest.raises(ValueError, match="invalid model name"):
        import_bundle(out, name="../escape")


# ------------------------------------------------------------------------ rejections

def make_bundle(path, members, *, config=None):
    """A zip holding ``b.yaml`` plus ``members`` (name or ZipInfo -> bytes)."""
    config = config_dict("b.pth") if config is None else config
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("b.yaml", yaml.safe_dump(config))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def symlink_info(name):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.fixture
def weights(tmp_path):
    return save_tiny(tmp_path / "w.pth").read_bytes()


REJECTIONS = [
    ("absolute", lambda w: {"b.pth": w, "/etc/evil.pth": b"x"}, "absolute path"),
    ("drive", lambda w: {"b.pth": w, "C:/evil.pth": b"x"}, "absolute path"),
    ("traversal", lambda w: {"b.pth": w, "../evil.pth": b"x"}, r"outside the bundle \('..'\)"),
    ("nested traversal", lambda w: {"b.pth": w, "a/../../evil": b"x"}, "outside the bundle"),
    ("symlink", lambda w: {symlink_info("b.pth"): b"/etc/passwd"}, "symbolic link"),
    ("folder", lambda w: {"b.pth": w, "sub/x.pth": b"x"}, "no folders"),
    ("directory entry", lambda w: {"b.pth": w, "sub/": b""}, "no folders"),
    ("unexpected", lambda w: {"b.pth": w, "notes.txt": b"hi"}, r"unexpected member.*notes.txt"),
    ("missing weights", lambda w: {}, "`model` in b.yaml is 'b.pth', which is not a file"),
]


@pytest.mark.parametrize(("case", "members", "match"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejects_unsafe_bundles(home, tmp_path, weights, case, members, match):
    bundle = make_bundle(tmp_path / "b.empanada", members(weights))
    with pytest.raises(BundleError, match=match):
        import_bundle(bundle)
    assert user_state(home) == []
    assert "b" not in reg.list_models()


def test_rejects_huge_members(home, tmp_path, weights):
    bundle = make_bundle(tmp_path / "b.empanada", {"b.pth": weights})
    with pytest.raises(BundleError, match=f"{len(weights)} bytes, over the limit of 1000"):
        import_bundle(bundle, max_member_bytes=1000)
    assert user_state(home) == []


def test_rejects_duplicate_members(home, tmp_path, weights):
    bundle = tmp_path / "b.empanada"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("b.yaml", yaml.safe_dump(config_dict("b.pth")))
        zf.writestr("b.pth", weights)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("b.pth", b"second")
    with pytest.raises(BundleError, match="appears twice"):
        import_bundle(bundle)


def test_rejects_a_non_zip(home, tmp_path):
    bundle = tmp_path / "b.empanada"
    bundle.write_bytes(b"plain text")
    with pytest.raises(BundleError, match="not a valid .empanada"):
        import_bundle(bundle)


def test_rejects_missing_or_ambiguous_config(home, tmp_path, weights):
    bundle = tmp_path / "x.empanada"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("b.pth", weights)
    with pytest.raises(BundleError, match="expected one .yaml config.*none"):
        import_bundle(bundle)
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("a.yaml", yaml.safe_dump(config_dict("b.pth")))
        zf.writestr("c.yaml", yaml.safe_dump(config_dict("b.pth")))
        zf.writestr("b.pth", weights)
    with pytest.raises(BundleError, match=r"expected one .yaml config.*a.yaml"):
        import_bundle(bundle)


def test_rejects_an_invalid_config(home, tmp_path, weights):
    bundle = make_bundle(tmp_path / "b.empanada", {"b.pth": weights},
                         config=config_dict("b.pth", padding_factor="big"))
    with pytest.raises(BundleError, match="invalid config 'b.yaml'.*padding_factor"):
        import_bundle(bundle)
    bundle = tmp_path / "c.empanada"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("c.yaml", "model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(BundleError, match="invalid config"):
        import_bundle(bundle)


def test_rejects_a_missing_quantized_member(home, tmp_path, weights):
    bundle = make_bundle(tmp_path / "b.empanada", {"b.pth": weights},
                         config=config_dict("b.pth", model_quantized="b_quantized.pth"))
    with pytest.raises(BundleError, match="`model_quantized`.*b_quantized.pth"):
        import_bundle(bundle)


def test_rejects_a_corrupt_member(home, tmp_path, weights):
    bundle = make_bundle(tmp_path / "b.empanada", {"b.pth": weights},
                         config=config_dict("b.pth", sha256="0" * 64))
    with pytest.raises(ChecksumError, match="'b.pth' is corrupt.*expected sha256 0{64}"):
        import_bundle(bundle)
    assert "b" not in reg.list_models()
    assert list((home / "models").iterdir()) == []
    assert not (home / "configs").exists()


def test_extract_never_writes_more_than_declared(home, tmp_path, weights, monkeypatch):
    # A member whose data runs past its declared size is refused while copying.
    bundle = make_bundle(tmp_path / "b.empanada", {"b.pth": weights})
    real_open = zipfile.ZipFile.open

    class Longer:
        def __init__(self, inner):
            self.inner, self.extra = inner, b"x" * 10

        def read(self, n=-1):
            data = self.inner.read(n)
            if not data and self.extra:
                data, self.extra = self.extra, b""
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()

    def fake_open(self, member, *a, **k):
        f = real_open(self, member, *a, **k)
        name = member.filename if isinstance(member, zipfile.ZipInfo) else member
        return Longer(f) if name == "b.pth" else f

    monkeypatch.setattr(zipfile.ZipFile, "open", fake_open)
    with pytest.raises(BundleError, match="more data than its header declares"):
        import_bundle(bundle)
    assert "b" not in reg.list_models()
    assert list((home / "models").iterdir()) == []
