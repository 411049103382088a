"""The cases a new user hit (issue: reliability, part 0), each reproduced and fixed."""

import os
import shutil

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")


# ------------------------------------------------------------ output is the input

@pytest.mark.parametrize(("name", "mode"), [("vol.tif", "stack"), ("img.tif", "2d")])
def test_output_equal_to_input_is_refused(workdir, cli, name, mode, small):
    before = (workdir / name).read_bytes()
    code, _, err = cli("segment", name, "-o", name, "--mode", mode, "--overwrite", *small)
    assert code == 2
    assert "is the input" in err
    assert (workdir / name).read_bytes() == before


def test_output_through_a_hard_link_or_other_spelling_is_refused(workdir, cli, small):
    os.link(workdir / "vol.tif", workdir / "same.tif")
    before = (workdir / "vol.tif").read_bytes()
    for target in ("same.tif", "./sub/../vol.tif", str(workdir / "vol.tif")):
        (workdir / "sub").mkdir(exist_ok=True)
        code, _, err = cli("segment", "vol.tif", "-o", target, "--overwrite", *small)
        assert code == 2, target
        assert "is the input" in err
    assert (workdir / "vol.tif").read_bytes() == before


def test_batch_output_folder_equal_to_input_folder_is_refused(workdir, cli, small, volume_of_blobs):
    (workdir / "b").mkdir()
    tifffile.imwrite(workdir / "b" / "a.tif", volume_of_blobs()[0])
    code, _, err = cli("segment", "b", "-o", "b", *small)
    assert code == 2
    assert "is the input" in err
    assert sorted(p.name for p in (workdir / "b").iterdir()) == ["a.tif"]


# ------------------------------------------------------------------ stale resume

def _labels(path):
    return zarr.open_group(path, mode="r")["labels"][:]


def test_resume_refuses_an_output_of_a_replaced_input(workdir, cli, small, volume_of_blobs):
    assert cli("segment", "vol.tif", "-o", "out.zarr", *small)[0] == 0
    # same path, same shape, other content: the discs move the other way
    tifffile.imwrite(workdir / "vol.tif", volume_of_blobs(shift=-1))
    code, out, err = cli("segment", "vol.tif", "-o", "out.zarr", *small)
    assert code == 2
    assert "already complete" not in out
    assert "input_fingerprint" in err
    assert "--overwrite" in err
    assert cli("segment", "vol.tif", "-o", "out.zarr", "--overwrite", *small)[0] == 0
    assert cli("segment", "vol.tif", "-o", "fresh.tif", *small)[0] == 0
    np.testing.assert_array_equal(_labels(workdir / "out.zarr"),
                                  tifffile.imread(workdir / "fresh.tif"))


def test_resume_refuses_an_output_of_other_model_weights(workdir, cli, small):
    from empanada_models.testing import write_test_model

    assert cli("segment", "vol.tif", "-o", "out.zarr", *small)[0] == 0
    write_test_model(workdir, "Blob", threshold=-0.2)  # new weights behind the same name
    code, out, err = cli("segment", "vol.tif", "-o", "out.zarr", *small)
    assert code == 2
    assert "model_sha256" in err


def test_unchanged_input_still_resumes(workdir, cli, small):
    assert cli("segment", "vol.tif", "-o", "out.zarr", *small)[0] == 0
    code, out, _ = cli("segment", "vol.tif", "-o", "out.zarr", *small)
    assert code == 0
    assert "already complete" in out


# -------------------------------------------------------------- batch file names

def test_batch_inputs_with_one_stem_get_distinct_outputs(workdir, cli, small, volume_of_blobs):
    imageio = pytest.importorskip("imageio.v3")
    vol = volume_of_blobs()
    (workdir / "b").mkdir()
    tifffile.imwrite(workdir / "b" / "cell.tif", vol[0])
    tifffile.imwrite(workdir / "b" / "cell.tiff", vol[5])
    imageio.imwrite(workdir / "b" / "cell.png", vol[10])
    tifffile.imwrite(workdir / "b" / "other.tif", vol[3])
    for extra in ([], ["--overwrite"]):
        code, _, err = cli("segment", "b", "-o", "out", "--mode", "batch", "--model",
                           "Blob.yaml", "--quiet", *extra)
        assert code == 0, err
    names = sorted(p.name for p in (workdir / "out").glob("[!.]*"))
    assert names == ["cell_png_labels.tif", "cell_tif_labels.tif", "cell_tiff_labels.tif",
                     "other_labels.tif"]
    # each output is the labels of its own input
    one = tifffile.imread(workdir / "out" / "cell_tiff_labels.tif")
    assert cli("segment", "b/cell.tiff", "-o", "single.tif", *small)[0] == 0
    np.testing.assert_array_equal(one, tifffile.imread(workdir / "single.tif"))


# --------------------------------------------------------- unwritable outputs

@pytest.mark.parametrize("target", ["/proc/empanada-test/out.tif", "/proc/out.tif",
                                    "/proc/out.zarr"])
def test_unwritable_output_fails_before_inference(workdir, cli, monkeypatch, target, small):
    import empanada_infer._segmenter as engine

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for an output that cannot be written")

    monkeypatch.setattr(engine.Segmenter, "from_registry", no_model)
    code, _, err = cli("segment", "vol.tif", "-o", target, *small)
    assert code != 0
    assert target in err
    assert "partial" not in err


def test_output_under_a_file_is_refused(workdir, cli, small, volume_of_blobs):
    code, _, err = cli("segment", "vol.tif", "-o", "img.tif/out.tif", *small)
    assert code != 0
    assert "img.tif" in err


# ---------------------------------------------------------------- corrupt inputs

def _corrupt_files(folder):
    vol = tifffile.imread(folder / "vol.tif")
    tifffile.imwrite(folder / "good.tif", vol)
    tifffile.imwrite(folder / "goodz.tif", vol, compression="zlib")
    data = (folder / "good.tif").read_bytes()
    (folder / "cut.tif").write_bytes(data[: len(data) // 2])
    zdata = (folder / "goodz.tif").read_bytes()
    (folder / "cutz.tif").write_bytes(zdata[: len(zdata) // 2])
    (folder / "text.tif").write_text("hello, not an image\n")
    np.save(folder / "vol.npy", vol)
    (folder / "cut.npy").write_bytes((folder / "vol.npy").read_bytes()[:500])
    broken = bytearray(data)
    broken[4:8] = b"\xff\xff\xff\x7f"  # first IFD offset past the end
    (folder / "ifd.tif").write_bytes(bytes(broken))
    return ["cut.tif", "cutz.tif", "text.tif", "cut.npy", "ifd.tif"]


def test_corrupt_inputs_name_the_file(workdir, cli, small):
    for name in _corrupt_files(workdir):
        code, _, err = cli("segment", name, "-o", f"{name}.out.tif", *small)
        assert code == 2, name
        assert name in err
        assert "truncated or not" in err, err
        assert "Traceback" not in err
        assert not (workdir / f"{name}.out.tif").exists()


def test_truncated_compressed_stack_is_not_read_as_fewer_slices(workdir):
    import empanada_infer as ei

    _corrupt_files(workdir)
    with pytest.raises(ei.UnreadableImageError, match="cutz.tif"):
        ei.open_image(workdir / "cutz.tif")
    assert ei.open_image(workdir / "goodz.tif").shape == (12, 80, 100)


def test_batch_error_names_the_bad_file(workdir, cli, small, volume_of_blobs):
    (workdir / "b").mkdir()
    tifffile.imwrite(workdir / "b" / "a.tif", volume_of_blobs()[0])
    shutil.copy(workdir / "img.tif", workdir / "b" / "c.tif")
    (workdir / "b" / "b.tif").write_text("not a tiff")
    code, _, err = cli("segment", "b", "-o", "out", *small)
    assert code == 2
    assert "b.tif" in err
    assert "truncated or not a TIFF" in err
    # the good images are segmented all the same
    assert sorted(p.name for p in (workdir / "out").glob("*.tif")) == ["a_labels.tif",
                                                                        "c_labels.tif"]


def test_batch_resumes_and_redoes_changed_inputs(workdir, cli, small, volume_of_blobs,
                                                 monkeypatch):
    import empanada_infer as ei

    vol = volume_of_blobs()
    (workdir / "b").mkdir()
    for i in range(4):
        tifffile.imwrite(workdir / "b" / f"im{i}.tif", vol[2 * i])
    assert cli("segment", "b", "-o", "out", *small)[0] == 0
    tifffile.imwrite(workdir / "b" / "im2.tif", vol[11])  # changed since
    (workdir / "out" / "im3_labels.tif").unlink()  # as if killed before it
    done = []
    real = ei.Segmenter.segment_image
    monkeypatch.setattr(ei.Segmenter, "segment_image",
                        lambda self, image, **kw: done.append(1) or real(self, image, **kw))
    code, _, err = cli("segment", "b", "-o", "out", *small)
    assert code == 0, err
    assert len(done) == 2  # im2 (changed) and im3 (missing); im0 and im1 skipped
    assert "2 image(s) already segmented" in err
    assert cli("segment", "b/im2.tif", "-o", "im2.tif", *small)[0] == 0
    np.testing.assert_array_equal(tifffile.imread(workdir / "out" / "im2_labels.tif"),
                                  tifffile.imread(workdir / "im2.tif"))


def test_batch_refuses_to_replace_results_it_did_not_make(workdir, cli, small,
                                                          volume_of_blobs):
    (workdir / "b").mkdir()
    tifffile.imwrite(workdir / "b" / "a.tif", volume_of_blobs()[0])
    (workdir / "out").mkdir()
    (workdir / "out" / "a_labels.tif").write_bytes(b"someone's result")
    code, _, err = cli("segment", "b", "-o", "out", *small)
    assert code == 2
    assert "--overwrite" in err
    assert (workdir / "out" / "a_labels.tif").read_bytes() == b"someone's result"
    assert cli("segment", "b", "-o", "out", "--overwrite", *small)[0] == 0


# ------------------------------------------------------------------ short stacks

@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("mode", ["stack", "ortho"])
def test_short_stacks_keep_their_objects_and_say_so(workdir, cli, depth, mode, volume_of_blobs):
    tifffile.imwrite(workdir / "short.tif", volume_of_blobs(depth))
    flags = ["--model", "Blob.yaml", "--min-size", "10", "--quiet"]
    if mode == "ortho":
        flags.append("--allow-one-view")
    code, out, err = cli("segment", "short.tif", "-o", "short_out.tif", "--mode", mode,
                         *flags, "--json")
    assert code == 0, err
    assert f"using --min-extent {depth} for this volume" in err  # in the flag's words
    assert err.count("--min-extent 5") == 1  # once, on one line, no source line
    assert "warnings.warn" not in err
    labels = tifffile.imread(workdir / "short_out.tif")
    assert len(np.unique(labels)) - 1 == 2


def test_short_stack_api_warns(workdir, volume_of_blobs):
    import empanada_infer as ei
    import empanada_models as em

    config = em.ModelConfig.from_yaml(workdir / "Blob.yaml")
    seg = ei.Segmenter(em.load_model(config), config, ei.SegmentationParams(min_size=10),
                       device="cpu")
    with pytest.warns(UserWarning, match="min_extent=2"):
        labels = seg.segment_stack(volume_of_blobs(2))
    assert len(np.unique(labels)) == 3
