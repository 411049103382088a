"""Batch mode on stacks, and flags that the chosen mode does not read."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

from empanada_models.cli import main  # noqa: E402
from empanada_models.testing import write_test_model  # noqa: E402

SMALL = ["--model", "Blob.yaml", "--quiet"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write_test_model(tmp_path, "Blob")
    yy, xx = np.mgrid[:80, :100]
    # four unrelated images: one, two, zero and three blobs
    images = np.full((4, 80, 100), 200, np.uint8)
    centres = [[(30, 30)], [(25, 20), (55, 70)], [], [(20, 20), (60, 30), (40, 80)]]
    for z, points in enumerate(centres):
        for y, x in points:
            images[z][(yy - y) ** 2 + (xx - x) ** 2 <= 81] = 40
    tifffile.imwrite(tmp_path / "images.tif", images, photometric="minisblack")
    (tmp_path / "folder").mkdir()
    for z in range(4):
        tifffile.imwrite(tmp_path / "folder" / f"im{z}.tif", images[z])
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_batch_on_a_multipage_tiff_writes_one_stack_of_independent_slices(workdir, capsys):
    code, out, err = run(capsys, "segment", "images.tif", "--mode", "batch", "-o", "out.tif",
                         *SMALL, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["mode"] == "batch"
    assert summary["objects"] == {"blob": 6}
    labels = tifffile.imread(workdir / "out.tif")
    assert labels.shape == (4, 80, 100)
    # ids restart in every slice: each slice is what 2D mode gives for that image
    for z in range(4):
        assert run(capsys, "segment", f"folder/im{z}.tif", "-o", f"one{z}.tif", *SMALL)[0] == 0
        np.testing.assert_array_equal(labels[z], tifffile.imread(workdir / f"one{z}.tif"))
    assert [len(np.unique(s)) - 1 for s in labels] == [1, 2, 0, 3]


def test_batch_on_a_3d_array_to_zarr_resumes(workdir, capsys):
    np.save(workdir / "images.npy", tifffile.imread(workdir / "images.tif"))
    assert run(capsys, "segment", "images.npy", "--mode", "batch", "-o", "out.zarr",
               *SMALL)[0] == 0
    first = np.asarray(zarr.open_group(str(workdir / "out.zarr"))["labels"])
    code, out, _ = run(capsys, "segment", "images.npy", "--mode", "batch", "-o", "out.zarr",
                       *SMALL)
    assert code == 0
    assert "already complete" in out
    np.testing.assert_array_equal(first, tifffile.imread(workdir / "images.tif") * 0
                                  + first)  # unchanged
    assert [len(np.unique(s)) - 1 for s in first] == [1, 2, 0, 3]


def test_batch_on_a_folder_refuses_a_tiff_output_and_makes_no_directory(workdir, capsys):
    code, _, err = run(capsys, "segment", "folder", "--mode", "batch", "-o", "x.tif", *SMALL)
    assert code == 2
    assert "must name a folder, not x.tif" in err
    assert not (workdir / "x.tif").exists()
    code, _, err = run(capsys, "segment", "folder", "-o", "x.zarr", *SMALL)  # auto: batch
    assert code == 2
    assert "must name a folder" in err
    assert not (workdir / "x.zarr").exists()


def test_one_bad_slice_is_reported_and_the_others_are_written(workdir, capsys):
    images = tifffile.imread(workdir / "images.tif").astype(np.float32)
    images[1, 5, 5] = np.nan
    tifffile.imwrite(workdir / "float.tif", images, photometric="minisblack")
    code, out, err = run(capsys, "segment", "float.tif", "--mode", "batch", "-o", "out.tif",
                         *SMALL)
    assert code == 2
    assert "1 slice(s) of float.tif could not be segmented" in err
    assert "slice 1" in err
    assert "NaN" in err
    labels = tifffile.imread(workdir / "out.tif")
    assert [len(np.unique(s)) - 1 for s in labels] == [1, 0, 0, 3]


def test_one_bad_image_in_a_folder_is_reported_and_the_others_are_written(workdir, capsys):
    (workdir / "folder" / "im1.tif").write_bytes(b"not a tiff")
    code, _, err = run(capsys, "segment", "folder", "-o", "out", *SMALL)
    assert code == 2
    assert "1 image(s) of folder could not be segmented" in err
    assert "im1.tif" in err
    assert sorted(p.name for p in (workdir / "out").glob("*.tif")) == [
        "im0_labels.tif", "im2_labels.tif", "im3_labels.tif"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["images.tif", "--mode", "stack", "--vote-thr", "3"],
         "--vote-thr not used in stack mode (--vote-thr: ortho mode)"),
        (["images.tif", "--mode", "stack", "--return-stacks"], "--return-stacks not used"),
        (["images.tif", "--mode", "ortho", "--plane", "xz"], "--plane not used in ortho"),
        (["images.tif", "--mode", "batch", "--min-size", "10"], "--min-size not used in batch"),
        (["images.tif", "--mode", "stack", "--tile-size", "64"], "--tile-size not used"),
        (["images.tif", "--block-size", "32"], "add --workers N"),
        (["folder/im0.tif", "--gpus", "2"], "--gpus 2 splits 3D volumes"),
    ],
)
def test_flags_of_another_mode_are_errors(workdir, capsys, argv, message):
    code, _, err = run(capsys, "segment", *argv, "-o", "x.tif", *SMALL)
    assert code == 2, err
    assert message in err
    assert not (workdir / "x.tif").exists()


def test_flags_of_another_mode_warn_when_the_input_chose_the_mode(workdir, capsys):
    code, _, err = run(capsys, "segment", "folder/im0.tif", "-o", "x.tif", *SMALL,
                       "--min-size", "10", "--median-size", "5")
    assert code == 0
    assert ("empanada: warning: --median-size, --min-size not used in 2d mode "
            "(--median-size: stack and ortho mode; --min-size: stack and ortho mode); "
            "ignored for this input") in err


def test_gpus_without_gpus_is_an_error_and_on_cpu_a_warning(workdir, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "segment", "images.tif", "-o", "x.tif", *SMALL, "--gpus", "2")
    assert code == 2
    assert "--gpus 2: no CUDA GPU found" in err
    assert "--device cpu" in err
    code, _, err = run(capsys, "segment", "images.tif", "-o", "x.tif", *SMALL, "--gpus", "2",
                       "--device", "cpu", "--min-size", "10", "--min-extent", "2")
    assert code == 0, err
    assert "runs 2 CPU processes" in err


def test_help_has_no_none_defaults(capsys):
    for command in (["segment"], ["evaluate"]):
        assert main([*command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "(default: None)" not in out
        assert "(default: False)" not in out


def test_dtype_normalisation_of_12_bit_data_warns(workdir, capsys):
    images = tifffile.imread(workdir / "images.tif")
    twelve_bit = (images[1].astype(np.uint16) * 16)  # 0..4080 in a 16-bit container
    tifffile.imwrite(workdir / "twelve.tif", twelve_bit)
    code, _, err = run(capsys, "segment", "twelve.tif", "-o", "d.tif", *SMALL,
                       "--normalize", "dtype")
    assert code == 0, err
    assert ("empanada: warning: twelve.tif uses only 5% of the uint16 range (largest value "
            "3200 of 65535)") in err
    assert "--normalize percentile" in err
    code, _, err = run(capsys, "segment", "twelve.tif", "-o", "p.tif", *SMALL)  # percentile
    assert code == 0
    assert "warning" not in err
    assert len(np.unique(tifffile.imread(workdir / "p.tif"))) - 1 == 2
