"""The bad-input matrix: every odd image a microscope or a script can produce, in every mode.

Each case either runs (and says what is odd about it) or fails with one line that names
the file and what to do: exit code 2, no traceback, no output file left behind.
"""

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")


def _blobs(depth=6, size=64):
    vol = np.full((depth, size, size), 200, np.uint8)
    vol[:, 20:40, 20:40] = 40
    return vol


_RNG = np.random.default_rng(0)
#: name -> (array, {mode: expected}); expected is "ok", "ok-empty" (runs, 0 objects)
#: or the text the one-line error must contain
CASES = {
    "1d.npy": (np.zeros(100, np.uint8), dict.fromkeys(("2d", "stack", "ortho"), "got 1D")),
    "4d.npy": (np.zeros((2, 3, 32, 32), np.uint8),
               dict.fromkeys(("2d", "stack", "ortho"), "got 4D")),
    "empty.npy": (np.zeros((0, 32, 32), np.uint8),
                  dict.fromkeys(("2d", "stack", "ortho"), "is empty")),
    "rgb.tif": (np.zeros((64, 64, 3), np.uint8),
                dict.fromkeys(("2d", "stack", "ortho"), "RGB colour")),
    "rgba.tif": (np.zeros((64, 64, 4), np.uint8),
                 dict.fromkeys(("2d", "stack", "ortho"), "RGBA colour")),
    "rgb_stack.npy": (np.zeros((4, 64, 64, 3), np.uint8),
                      dict.fromkeys(("2d", "stack", "ortho"), "RGB colour")),
    "all_nan.npy": (np.full((64, 64), np.nan, np.float32), {"2d": "NaN"}),
    "part_nan.npy": (np.where(_RNG.random((4, 64, 64)) > 0.5, np.nan, 1).astype(np.float32),
                     {"stack": "NaN", "ortho": "NaN"}),
    "inf.npy": (np.full((64, 64), np.inf, np.float32), {"2d": "infinite"}),
    "bool.npy": (_blobs() < 100, dict.fromkeys(("2d", "stack", "ortho"), "boolean")),
    "constant.tif": (np.full((64, 64), 7, np.uint8), {"2d": "ok-empty"}),
    "1x1.tif": (np.full((1, 1), 5, np.uint8), {"2d": "ok-empty"}),
    "3x3.tif": (_RNG.integers(0, 255, (3, 3), dtype=np.uint8), {"2d": "ok"}),
    "12bit.tif": (_blobs().astype(np.uint16) * 16, {"stack": "ok", "ortho": "ok"}),
    "float01.tif": ((_blobs() / 255).astype(np.float32), {"stack": "ok", "ortho": "ok"}),
    "int8.tif": ((_blobs().astype(np.int16) - 128).astype(np.int8),
                 {"stack": "ok", "ortho": "ok"}),
    "thin.tif": (np.full((1, 8, 4096), 200, np.uint8), {"stack": "ok-empty",
                                                         "ortho": "ok-empty"}),
    "stack_in_2d.tif": (_blobs(), {"2d": "--mode stack"}),
    "image_in_3d.tif": (_blobs()[0], {"stack": "must be 3D", "ortho": "must be 3D"}),
}
MATRIX = [(name, mode) for name, (_, modes) in CASES.items() for mode in modes]


@pytest.mark.parametrize(("name", "mode"), MATRIX)
def test_bad_input(workdir, cli, name, mode):
    image, modes = CASES[name]
    expected = modes[mode]
    (np.save if name.endswith(".npy") else tifffile.imwrite)(workdir / name, image)
    out = workdir / f"out_{mode}_{name}.tif"
    filters = ["--min-size", "10"] if mode != "2d" else []  # 2d mode has no 3D filters
    code, stdout, err = cli("segment", name, "-o", out.name, "--mode", mode, "--model",
                            "Blob.yaml", *filters, "--quiet", "--json")
    assert "Traceback" not in err
    if expected.startswith("ok"):
        assert code == 0, err
        labels = tifffile.imread(out)
        # a one-page TIFF reads back 2D: (1, M, N) is written as (M, N)
        assert labels.shape == tuple(n for n in image.shape if image.ndim == 2 or n != 1)
        if expected == "ok-empty":
            assert not labels.any()
        else:
            assert labels.dtype == np.uint32
        return
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("empanada: error")]
    assert len(lines) == 1, err
    assert name in lines[0]
    assert expected in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("mode", ["2d", "stack", "ortho", "batch"])
def test_missing_input(workdir, cli, mode):
    code, _, err = cli("segment", "nothere.tif", "-o", "o.tif", "--mode", mode, "--model",
                       "Blob.yaml")
    assert code == 2
    assert "nothere.tif" in err


def test_output_folder_that_does_not_exist_is_created(workdir, cli, small):
    code, _, err = cli("segment", "vol.tif", "-o", "new/deeper/out.tif", *small)
    assert code == 0, err
    assert (workdir / "new" / "deeper" / "out.tif").is_file()


def test_existing_output_without_overwrite_is_kept(workdir, cli, small):
    (workdir / "out.tif").write_bytes(b"previous result")
    code, _, err = cli("segment", "vol.tif", "-o", "out.tif", *small)
    assert code == 2
    assert "--overwrite" in err
    assert (workdir / "out.tif").read_bytes() == b"previous result"


# ----------------------------------------------------------------------- configs

def _config_variant(workdir, change):
    import empanada_models as em

    data = em.load_yaml((workdir / "Blob.yaml").read_text())
    change(data)
    import yaml

    (workdir / "Variant.yaml").write_text(yaml.safe_dump(data))
    return "Variant.yaml"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.pop("norms"), "norms"),
    (lambda d: d.pop("model"), "model"),
    (lambda d: d.update(padding_factor="sixteen"), "padding_factor"),
    (lambda d: d.update(labels="mito"), "labels"),
    (lambda d: d.update(arch="UNetXXL"), "arch"),
    (lambda d: d.update(model="missing_weights.pth"), "missing_weights.pth"),
    (lambda d: d.update(model="garbage.pth"), "garbage.pth"),
    (lambda d: d.update(model="truncated.pth"), "truncated.pth"),
])
def test_bad_config(workdir, cli, small, change, expected):
    (workdir / "garbage.pth").write_bytes(b"\x00garbage" * 100)
    data = (workdir / "Blob.pth").read_bytes()
    (workdir / "truncated.pth").write_bytes(data[: len(data) // 2])
    name = _config_variant(workdir, change)
    flags = [f if f != "Blob.yaml" else name for f in small]
    code, _, err = cli("segment", "vol.tif", "-o", "out.tif", *flags)
    assert code != 0
    assert "Traceback" not in err
    assert expected in err
    assert not (workdir / "out.tif").exists()


def test_not_yaml_config(workdir, cli, small):
    (workdir / "Broken.yaml").write_text("model: [unclosed\n")
    flags = [f if f != "Blob.yaml" else "Broken.yaml" for f in small]
    code, _, err = cli("segment", "vol.tif", "-o", "out.tif", *flags)
    assert code == 2
    assert "Broken.yaml" in err
    assert "YAML" in err


def test_unreachable_model_url_fails_fast_and_says_what_to_do(workdir, cli, small):
    import time

    # a closed port on this machine: the connection is refused at once
    name = _config_variant(workdir, lambda d: d.update(model="http://127.0.0.1:9/Blob.pth"))
    flags = [f if f != "Blob.yaml" else name for f in small]
    start = time.perf_counter()
    code, _, err = cli("segment", "vol.tif", "-o", "out.tif", *flags)
    assert time.perf_counter() - start < 30
    assert code != 0
    assert "127.0.0.1:9" in err
    assert "empanada models register" in err


# ------------------------------------------------- the other commands' bad inputs

@pytest.mark.parametrize(("argv", "expected"), [
    (["patches", "pick", "rgb.tif", "-o", "p", "--n", "2", "--size", "32"], "rgb.tif"),
    (["patches", "pick", "vol.tif", "-o", "p", "--n", "2", "--size", "32", "--labels",
      "rgb.tif"], "rgb.tif"),
    (["patches", "pick", "nothere.tif", "-o", "p"], "nothere.tif"),
    (["patches", "store", "nothere", "data", "ds"], "nothere"),
    (["train", "nothere.yaml", "--train-dir", "x"], "nothere.yaml"),
    (["train", "Blob.yaml", "--train-dir", "x", "--labels", "1,mito,instance"], "Blob.yaml"),
    (["models", "register", "bad/name", "Blob.yaml"], "bad/name"),
    (["models", "register", "Good", "nothere.yaml"], "nothere.yaml"),
    (["models", "info", "NoSuch"], "NoSuch"),
    (["models", "import", "nothere.empanada"], "nothere.empanada"),
    (["models", "import", "junk.empanada"], "junk.empanada"),
])
def test_other_commands_name_what_is_wrong(workdir, cli, argv, expected):
    pytest.importorskip("empanada_train")
    tifffile.imwrite(workdir / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    (workdir / "junk.empanada").write_text("junk")
    code, _, err = cli(*argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("empanada: error")]
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (workdir / "p").exists()
