import json

import numpy as np
import pytest

pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from empanada_models.cli import main  # noqa: E402
from empanada_models.testing import write_test_model  # noqa: E402


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write_test_model(tmp_path, "Blob")
    yy, xx = np.mgrid[:80, :100]
    vol = np.full((12, 80, 100), 200, np.uint8)
    for z in range(12):
        vol[z][(yy - 25) ** 2 + (xx - 20 - z) ** 2 <= 81] = 40
        vol[z][(yy - 55) ** 2 + (xx - 70 + z) ** 2 <= 81] = 40
    tifffile.imwrite(tmp_path / "vol.tif", vol)
    tifffile.imwrite(tmp_path / "img.tif", vol[0])
    (tmp_path / "batch").mkdir()
    for i in range(3):
        tifffile.imwrite(tmp_path / "batch" / f"im{i}.tif", vol[i * 4])
    (tmp_path / "batch" / "Thumbs.db").write_bytes(b"junk")
    return tmp_path


SMALL = ["--model", "Blob.yaml", "--min-size", "10", "--min-extent", "2", "--quiet"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stack_to_tiff_with_json_summary(workdir, capsys):
    code, out, _ = run(capsys, "segment", "vol.tif", "-o", "out.tif", *SMALL, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["mode"] == "stack"
    assert summary["objects"] == {"blob": 2}
    labels = tifffile.imread(workdir / "out.tif")
    assert labels.shape == (12, 80, 100)
    assert labels.dtype == np.uint32
    assert set(np.unique(labels)) == {0, 10001, 10002}


def test_existing_output_needs_overwrite(workdir, capsys):
    assert run(capsys, "segment", "img.tif", "-o", "a.tif", *SMALL)[0] == 0
    code, _, err = run(capsys, "segment", "img.tif", "-o", "a.tif", *SMALL)
    assert code == 2
    assert "--overwrite" in err
    assert run(capsys, "segment", "img.tif", "-o", "a.tif", *SMALL, "--overwrite")[0] == 0


def test_2d_image_is_2d(workdir, capsys):
    assert run(capsys, "segment", "img.tif", "-o", "img_out.tif", *SMALL)[0] == 0
    assert tifffile.imread(workdir / "img_out.tif").shape == (80, 100)


def test_zarr_output_resumes_and_skips_when_complete(workdir, capsys, monkeypatch):
    assert run(capsys, "segment", "vol.tif", "-o", "out.zarr", *SMALL)[0] == 0
    import empanada_infer._segmenter as engine

    def no_model(*args, **kwargs):
        raise AssertionError("a complete output must not load the model")

    monkeypatch.setattr(engine.Segmenter, "from_registry", no_model)
    code, out, err = run(capsys, "segment", "vol.tif", "-o", "out.zarr", *SMALL)
    assert code == 0
    # one line, not a "segmented ..." summary as well
    assert out.strip().splitlines() == [
        "out.zarr is already complete (2 blob); nothing to do, pass --overwrite to run again"
    ]
    code, out, _ = run(capsys, "segment", "vol.tif", "-o", "out.zarr", *SMALL, "--json")
    summary = json.loads(out)
    assert summary["already_complete"] is True
    assert summary["objects"] == {"blob": 2}
    # different parameters on the same store: refused, asks for --overwrite
    code, _, err = run(capsys, "segment", "vol.tif", "-o", "out.zarr", *SMALL,
                       "--min-distance", "5")
    assert code == 2
    assert "overwrite" in err


def test_ortho_with_stacks(workdir, capsys):
    code, out, _ = run(capsys, "segment", "vol.tif", "-o", "o.tif", "--mode", "ortho",
                       "--return-stacks", *SMALL)
    assert code == 0
    for name in ("o.tif", "o_xy.tif", "o_xz.tif", "o_yz.tif"):
        assert (workdir / name).exists()


def test_batch_folder_skips_stray_files(workdir, capsys):
    code, out, _ = run(capsys, "segment", "batch", "-o", "batch_out", *SMALL)
    assert code == 0
    assert sorted(p.name for p in (workdir / "batch_out").glob("[!.]*")) == [
        "im0_labels.tif", "im1_labels.tif", "im2_labels.tif"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["segment", "missing.tif", "-o", "x.tif"], "does not exist"),
        (["segment", "vol.tif", "-o", "x.png"], "must end in"),
        (["segment", "vol.tif", "-o", "x.tif", "--model", "NoSuchModel"], "NoSuchModel"),
        (["segment", "vol.tif", "-o", "x.tif", "--downsampling", "3"], "power of two"),
        (["segment", "img.tif", "-o", "x.tif", "--mode", "stack"], "3D"),
        (["segment", "img.tif", "-o", "x.tif", "--gpus", "2"], "splits 3D volumes"),
    ],
)
def test_input_errors_exit_2(workdir, capsys, argv, message):
    if "--model" not in argv:
        argv = [*argv, "--model", "Blob.yaml"]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_evaluate(workdir, capsys):
    run(capsys, "segment", "vol.tif", "-o", "out.tif", *SMALL)
    code, out, _ = run(capsys, "evaluate", "out.tif", "out.tif", "--json", "--per-slice")
    assert code == 0
    report = json.loads(out)
    assert report["instance"]["0.5"]["f1"] == 1.0
    assert report["panoptic"]["pq"] == 1.0
    code, out, _ = run(capsys, "evaluate", "out.tif", "out.tif", "--iou", "0.9")
    assert "IoU >= 0.9: F1 1.0000" in out
    code, _, err = run(capsys, "evaluate", "out.tif", "img.tif")
    assert code == 2
    assert "shape" in err


def test_evaluate_folders_pairs_batch_output_with_ground_truth(workdir, capsys):
    assert run(capsys, "segment", "batch", "-o", "pred", *SMALL)[0] == 0
    gt = workdir / "gt"
    gt.mkdir()
    for i in range(3):
        labels = tifffile.imread(workdir / "pred" / f"im{i}_labels.tif")
        if i == 2:  # this image's ground truth has one more object (a miss)
            labels = labels.copy()
            labels[:5, :5] = 7
        tifffile.imwrite(gt / f"im{i}.tif", labels)
    code, out, _ = run(capsys, "evaluate", "pred", "gt", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["n_images"] == 3
    assert report["images"] == ["im0", "im1", "im2"]
    m = report["instance"]["0.5"]
    assert (m["tp"], m["fp"], m["fn"]) == (6, 0, 1)
    code, out, _ = run(capsys, "evaluate", "pred", "gt")
    assert "3 image pairs" in out
    (gt / "im2.tif").rename(gt / "other.tif")
    code, _, err = run(capsys, "evaluate", "pred", "gt")
    assert code == 2
    assert "do not pair up" in err
    assert "other" in err
    code, _, err = run(capsys, "evaluate", "pred", "img.tif")
    assert code == 2
    assert "two folders" in err


def test_two_processes_on_cpu_equal_one(workdir, capsys):
    assert run(capsys, "segment", "vol.tif", "-o", "one.tif", *SMALL)[0] == 0
    code, _, err = run(capsys, "segment", "vol.tif", "-o", "two.tif", *SMALL, "--gpus", "2",
                       "--device", "cpu")
    assert code == 0, err
    np.testing.assert_array_equal(tifffile.imread(workdir / "two.tif"),
                                  tifffile.imread(workdir / "one.tif"))


def test_interrupted_zarr_run_is_finished_by_a_rerun(workdir, capsys):
    """A run that dies half way leaves an incomplete store; the same command finishes it."""
    import empanada_infer as ei
    import empanada_models as em

    args = ["segment", "vol.tif", "-o", "crash.zarr", *SMALL]
    assert run(capsys, "segment", "vol.tif", "-o", "fresh.zarr", *SMALL)[0] == 0
    # what the CLI would have started: same store, same recorded parameters
    from empanada_infer.cli import _run_params_record
    from empanada_models.cli import build_parser

    parsed = build_parser().parse_args(args)
    config = em.ModelConfig.from_yaml(workdir / "Blob.yaml")
    out = ei.create_output(workdir / "crash.zarr", (12, 80, 100), np.uint32, resume=True,
                           params=_run_params_record(parsed, config,
                                                     ei.open_image(workdir / "vol.tif")),
                           slice_axis=0)
    seg = ei.Segmenter(em.load_model(config), config,
                       ei.SegmentationParams(min_size=10, min_extent=2), device="cpu")
    calls = []
    with pytest.raises(ei.InferenceCancelled):
        seg.segment_stack(tifffile.imread(workdir / "vol.tif"), out,
                          should_stop=lambda: calls.append(1) or len(calls) > 5)
    assert not ei.is_complete(out)
    code, _, err = run(capsys, *args)
    assert code == 0, err
    import zarr

    done = zarr.open_group(workdir / "crash.zarr", mode="r")["labels"]
    assert ei.is_complete(done)
    np.testing.assert_array_equal(done[:], zarr.open_group(workdir / "fresh.zarr",
                                                           mode="r")["labels"][:])


def test_no_channels_last_gives_the_same_labels(workdir, capsys):
    assert run(capsys, "segment", "vol.tif", "-o", "cl.tif", *SMALL)[0] == 0
    assert run(capsys, "segment", "vol.tif", "-o", "plain.tif", "--no-channels-last",
               *SMALL)[0] == 0
    np.testing.assert_array_equal(tifffile.imread("cl.tif"), tifffile.imread("plain.tif"))
