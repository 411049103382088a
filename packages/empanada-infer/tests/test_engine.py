import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import empanada_core as ec  # noqa: E402
import empanada_infer as ei  # noqa: E402
import empanada_models as em  # noqa: E402
from empanada_core.testing import assert_same_partition, data_path  # noqa: E402
from empanada_models.testing import write_test_model  # noqa: E402

DIV = 10000


@pytest.fixture(scope="module")
def blob_config(tmp_path_factory):
    return em.ModelConfig.from_yaml(write_test_model(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def blob_model(blob_config):
    return em.load_model(blob_config)


def segmenter(model, config, **params):
    return ei.Segmenter(model, config, ei.SegmentationParams(**params), device="cpu")


def discs(shape, centers, radius, dtype=np.uint8, fg=40, bg=200):
    img = np.full(shape, bg, dtype)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int64)
    for k, (cy, cx) in enumerate(centers, start=1):
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        img[inside] = fg
        truth[inside] = k
    return img, truth


CENTERS = [(30, 30), (30, 90), (75, 60)]


class TestImage:
    def test_one_object_per_disc(self, blob_model, blob_config):
        img, truth = discs((100, 130), CENTERS, 10)
        pan = segmenter(blob_model, blob_config).segment_image(img)
        assert pan.shape == img.shape
        assert pan.dtype == np.uint32
        assert set(np.unique(pan[pan > 0]) // DIV) == {1}
        assert_same_partition(pan, truth)

    @pytest.mark.parametrize("options", [dict(downsampling=2), dict(fine_boundaries=True,
                                         min_distance=7), dict(precision="bf16"),
                                         dict(batch_size=4), dict(channels_last=True),
                                         dict(channels_last=False)])
    def test_options_find_the_same_objects(self, blob_model, blob_config, options):
        img, truth = discs((100, 130), CENTERS, 10)
        pan = segmenter(blob_model, blob_config, **options).segment_image(img)
        metrics = ec.instance_metrics(truth, pan, iou_thresholds=(0.8,))
        assert metrics[0.8]["f1"] == 1.0

    def test_channels_last_is_the_default_on_cpu(self, blob_model, blob_config):
        assert segmenter(blob_model, blob_config).channels_last is True
        assert segmenter(blob_model, blob_config, channels_last=False).channels_last is False

    def test_uint16_and_float_images(self, blob_model, blob_config):
        img, truth = discs((64, 64), [(32, 32)], 12, dtype=np.uint16, fg=1000, bg=50000)
        seg = segmenter(blob_model, blob_config)
        assert_same_partition(seg.segment_image(img), truth)
        assert_same_partition(seg.segment_image(img.astype(np.float32) / 65535), truth)

    def test_semantic_only(self, blob_model, blob_config):
        img, _ = discs((100, 130), CENTERS, 10)
        pan = segmenter(blob_model, blob_config, semantic_only=True).segment_image(img)
        assert set(np.unique(pan)) == {0, DIV}

    def test_max_objects_is_enforced(self, blob_model, blob_config):
        img, _ = discs((100, 130), CENTERS, 10)
        with pytest.raises(ValueError, match="max objects per class|label_divisor"):
            segmenter(blob_model, blob_config, label_divisor=3).segment_image(img)
        pan = segmenter(blob_model, blob_config, label_divisor=3,
                        on_overflow="drop").segment_image(img)
        assert len(np.unique(pan)) == 3

    def test_batch_of_unrelated_images(self, blob_model, blob_config):
        a, ta = discs((64, 80), [(30, 30)], 10)
        b, tb = discs((90, 50), [(20, 20), (60, 30)], 8)
        done = []
        out = segmenter(blob_model, blob_config).segment_batch(
            [a, b], progress=lambda i, n: done.append((i, n))
        )
        assert_same_partition(out[0], ta)
        assert_same_partition(out[1], tb)
        assert done == [(1, 2), (2, 2)]

    @pytest.mark.parametrize(
        ("image", "error", "match"),
        [
            (np.zeros((8, 8, 3), np.uint8), TypeError, "RGB"),
            (np.zeros((2, 2, 8, 8), np.uint8), TypeError, "2D"),
            (np.full((8, 8), np.nan, np.float32), ValueError, "NaN"),
            (np.zeros((0, 8), np.uint8), ValueError, "empty|zero"),
        ],
    )
    def test_bad_images(self, blob_model, blob_config, image, error, match):
        with pytest.raises(error, match=match):
            segmenter(blob_model, blob_config).segment_image(image)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(downsampling=3), "power of two"),
        (dict(confidence_thr=2.0), "confidence_thr"),
        (dict(median_size=4), "median_size"),
        (dict(vote_thr=4), "vote_thr"),
        (dict(precision="fp16"), "precision"),
        (dict(normalize="zscore"), "normalize"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_params(options, match):
    with pytest.raises(ValueError, match=match):
        ei.SegmentationParams(**options)


def moving_discs(n_slices=10, shape=(80, 100)):
    frames, truths = [], []
    for z in range(n_slices):
        img, truth = discs(shape, [(25, 20 + z), (55, 70 - z)], 9)
        frames.append(img)
        truths.append(truth)
    return np.stack(frames), np.stack(truths)


class TestStack:
    @pytest.mark.parametrize("axis", ["xy", 0])
    def test_tracks_objects(self, blob_model, blob_config, axis):
        vol, truth = moving_discs()
        out = segmenter(blob_model, blob_config, min_size=10, min_extent=2).segment_stack(
            vol, axis=axis
        )
        assert out.dtype == np.uint32
        # the median filter moves edges of moving objects by a pixel here and there
        assert len(np.unique(out)) == 3
        assert ec.instance_metrics(truth, out, iou_thresholds=(0.9,))[0.9]["f1"] == 1.0

    def test_equals_assembling_2d_results(self, blob_model, blob_config):
        vol, _ = moving_discs()
        seg = segmenter(blob_model, blob_config, median_size=1, min_size=0, min_extent=0,
                        batch_size=3)
        out = seg.segment_stack(vol)
        slices = [seg.segment_image(s, value_range=None) for s in vol]
        ref = ec.assemble_stack(slices, shape=vol.shape, label_divisor=DIV, min_size=0,
                                min_extent=0)
        np.testing.assert_array_equal(out, ref)

    def test_other_axes_and_zarr_output(self, blob_model, blob_config, tmp_path):
        vol, _ = moving_discs()
        seg = segmenter(blob_model, blob_config, min_size=10, min_extent=2)
        out = ei.create_output(tmp_path / "o.zarr", vol.shape, np.uint32, slice_axis=2)
        seg.segment_stack(vol, out, axis="yz")
        assert out[:].any()
        ref = seg.segment_stack(vol, axis="yz")
        np.testing.assert_array_equal(out[:], ref)

    def test_progress_and_cancel(self, blob_model, blob_config):
        vol, _ = moving_discs()
        seen = []
        seg = segmenter(blob_model, blob_config, batch_size=2)
        seg.segment_stack(vol, progress=lambda i, n: seen.append(i))
        assert seen == list(range(1, len(vol) + 1))
        before = threading.active_count()
        with pytest.raises(ei.InferenceCancelled):
            seg.segment_stack(vol, should_stop=lambda: len(seen) > len(vol) + 2,
                              progress=lambda i, n: seen.append(i))
        assert threading.active_count() <= before

    def test_wrong_ndim(self, blob_model, blob_config):
        with pytest.raises(TypeError, match="3D"):
            segmenter(blob_model, blob_config).segment_stack(np.zeros((8, 8), np.uint8))


def test_orthoplane_consensus(blob_model, blob_config):
    shape = (40, 48, 48)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    truth = np.zeros(shape, np.int64)
    truth[(zz - 20) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 81] = 1
    truth[(zz - 20) ** 2 + (yy - 32) ** 2 + (xx - 32) ** 2 <= 100] = 2
    vol = np.where(truth > 0, 40, 200).astype(np.uint8)
    seg = segmenter(blob_model, blob_config, min_size=50, min_extent=3)
    cons, stacks = seg.segment_orthoplanes(vol, return_stacks=True)
    assert set(stacks) == {"xy", "xz", "yz"}
    assert cons.dtype == np.uint32
    metrics = ec.instance_metrics(truth, cons, iou_thresholds=(0.8,))
    assert metrics[0.8]["f1"] == 1.0


class _Classes:
    def __init__(self, labels, thing_list):
        self.labels, self.thing_list = labels, thing_list


def _ball_views(shape=(20, 24, 24)):
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ball = (zz - 10) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2 <= 25
    slab = (zz >= 4) & (zz < 16) & (yy >= 16) & (xx >= 16)
    return ball, slab


@pytest.mark.parametrize("to_zarr", [False, True])
def test_ortho_merge_thing_and_stuff_classes(tmp_path, to_zarr):
    ball, slab = _ball_views()
    params = ei.SegmentationParams(min_size=0, min_extent=0)
    div = params.label_divisor
    # class 1 (thing): the ball, instance numbers differ by view; class 2 (stuff): a slab
    stacks = {name: (ball * (div + k)) + slab * (2 * div)
              for k, name in enumerate(("xy", "xz", "yz"), start=3)}
    stacks = {k: v.astype(np.uint32) for k, v in stacks.items()}
    out = None
    if to_zarr:
        zarr = pytest.importorskip("zarr")
        out = zarr.create_array(tmp_path / "o.zarr", shape=ball.shape, dtype="uint32",
                                chunks=(4, 24, 24))
    merged = ei.ortho_merge(stacks, params, _Classes([1, 2], [1]), out=out)
    merged = np.asarray(merged[...])
    np.testing.assert_array_equal(merged[ball], div + 1)
    np.testing.assert_array_equal(merged[slab], 2 * div)
    assert not merged[~(ball | slab)].any()


class _ChunkedRecorder:
    """A chunked array stand-in that records every write (as zarr, by index tuples)."""

    def __init__(self, shape, chunks):
        self.data = np.zeros(shape, np.uint32)
        self.shape, self.chunks, self.writes = shape, chunks, []

    def __getitem__(self, index):
        return self.data[index]

    def __setitem__(self, index, value):
        self.writes.append(index)
        self.data[index] = value


def test_ortho_merge_writes_each_chunk_of_a_chunked_output_once():
    ball, slab = _ball_views()
    params = ei.SegmentationParams(min_size=0, min_extent=0)
    div = params.label_divisor
    stacks = {name: ((ball * (div + 1)) + slab * (2 * div)).astype(np.uint32)
              for name in ("xy", "xz", "yz")}
    chunks = (8, 10, 24)
    out = _ChunkedRecorder(ball.shape, chunks)
    ei.ortho_merge(stacks, params, _Classes([1], [1]), out=out)
    starts = [tuple(s.start for s in w) for w in out.writes]
    assert len(starts) == len(set(starts))  # no chunk rewritten
    for w in out.writes:
        for s, c, n in zip(w, chunks, ball.shape):
            assert s.start % c == 0
            assert s.stop == min(n, s.start + c)
    expected = ei.ortho_merge(stacks, params, _Classes([1], [1]))
    np.testing.assert_array_equal(out.data, expected)


def test_ortho_merge_single_class_equals_core_consensus():
    ball, slab = _ball_views()
    params = ei.SegmentationParams(min_size=0, min_extent=0)
    div = params.label_divisor
    views = [(ball * (div + 1) + slab * (div + 2)).astype(np.uint32) for _ in range(3)]
    views[1][slab] = 0  # one view misses the slab object: majority still keeps it
    merged = ei.ortho_merge(dict(zip(("xy", "xz", "yz"), views)), params, _Classes([1], [1]))
    expected = ec.ortho_consensus(*views, min_size=0, min_extent=0)
    np.testing.assert_array_equal(merged, np.where(expected > 0, expected + div, 0))
    assert set(np.unique(merged)) == {0, div + 1, div + 2}


@pytest.mark.realdata
def test_real_volume_shapes_and_ids(blob_model, blob_config):
    tifffile = pytest.importorskip("tifffile")
    vol = tifffile.imread(data_path("lucchi_epfl_hippocampus") / "images.tif")[:6, :256, :256]
    out = segmenter(blob_model, blob_config, min_size=0, min_extent=0).segment_stack(vol)
    assert out.shape == vol.shape
    assert out.dtype == np.uint32
    ids = np.unique(out[out > 0])
    assert ((ids // DIV) == 1).all()
    assert (ids % DIV > 0).all()


@pytest.mark.parametrize(
    "options",
    [dict(), dict(downsampling=2), dict(fine_boundaries=True, min_distance=7)],
    ids=["coarse", "downsampled", "fine"],
)
def test_tiled_image_equals_whole_image(blob_model, blob_config, options):
    # well separated discs on a jittered grid, several across tile borders
    rng = np.random.default_rng(0)
    centers = [(y + int(rng.integers(-6, 7)), x + int(rng.integers(-6, 7)))
               for y in range(25, 300, 45) for x in range(25, 340, 45)]
    img, _ = discs((300, 340), centers, 8)
    whole = segmenter(blob_model, blob_config, **options).segment_image(img)
    tiled = segmenter(blob_model, blob_config, tile_size=128, tile_overlap=64,
                      **options).segment_image(img)
    assert_same_partition(tiled, whole)


@pytest.mark.parametrize("axis", [0, 2])
def test_two_processes_equal_one(blob_model, blob_config, axis, tmp_path):
    """Multi-device inference (here 2 CPU processes over gloo) gives the same labels."""
    vol, _ = moving_discs(n_slices=11)
    params = ei.SegmentationParams(min_size=10, min_extent=2, median_size=3)
    single = ei.Segmenter(blob_model, blob_config, params, device="cpu").segment_stack(
        vol, axis=axis)
    np.save(tmp_path / "vol.npy", vol)
    for source in (vol, tmp_path / "vol.npy"):
        multi = ei.segment_stack_distributed(source, blob_config, params, axis=axis,
                                             world_size=2, backend="gloo")
        np.testing.assert_array_equal(multi, single)


class TestBackgroundForward:
    def test_items_in_order_and_errors_reach_the_consumer(self):
        from empanada_infer._threads import _background

        assert list(_background(iter(range(7)))) == list(range(7))

        def failing():
            yield 1
            raise RuntimeError("boom")

        gen = _background(failing())
        assert next(gen) == 1
        with pytest.raises(RuntimeError, match="boom"):
            next(gen)

    def test_closing_stops_the_producer(self):
        from empanada_infer._threads import _background

        produced = []

        def endless():
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1

        gen = _background(endless(), depth=2)
        assert next(gen) == 0
        gen.close()
        n = len(produced)
        threading.Event().wait(0.1)
        assert len(produced) == n <= 5

    def test_threaded_stack_equals_inline(self, blob_model, blob_config, monkeypatch):
        import empanada_infer._segmenter as engine

        rng = np.random.default_rng(1)
        vol = np.where(rng.random((9, 40, 40)) > 0.97, 40, 200).astype(np.uint8)
        vol = np.repeat(np.repeat(vol[:, ::4, ::4], 4, 1), 4, 2)
        seg = segmenter(blob_model, blob_config, min_size=0, min_extent=0, batch_size=2)
        inline = seg.segment_stack(vol)
        monkeypatch.setattr(engine, "_forward_in_background", lambda device: True)
        np.testing.assert_array_equal(seg.segment_stack(vol), inline)


def test_precision_auto_is_bf16_on_cuda_with_bf16_and_on_amx_cpus(monkeypatch):
    import torch

    import empanada_infer._precision as engine
    from empanada_infer._precision import _resolve_precision

    monkeypatch.setattr(engine, "cpu_has_bf16_matrix_units", lambda: False)
    assert _resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert _resolve_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(engine, "cpu_has_bf16_matrix_units", lambda: True)
    assert _resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert _resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert _resolve_precision("fp32", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert _resolve_precision("auto", torch.device("cuda")) == "fp32"


def test_cpu_bf16_matrix_units_flag_is_read_from_cpuinfo():
    from empanada_infer._precision import cpu_has_bf16_matrix_units

    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    assert cpu_has_bf16_matrix_units() is ("amx_bf16" in flags)


def test_default_precision_on_cpu_follows_the_cpu(monkeypatch, blob_model, blob_config):
    import empanada_infer._precision as engine

    assert ei.SegmentationParams().precision == "auto"
    monkeypatch.setattr(engine, "cpu_has_bf16_matrix_units", lambda: False)
    assert segmenter(blob_model, blob_config).precision == "fp32"
    monkeypatch.setattr(engine, "cpu_has_bf16_matrix_units", lambda: True)
    assert segmenter(blob_model, blob_config).precision == "bf16"
    with pytest.raises(ValueError, match="precision"):
        ei.SegmentationParams(precision="fp16")


# -- several single-threaded forwards at once on the CPU ------------------------------------
def test_cpu_workers_rule(monkeypatch):
    from empanada_infer._threads import _cpu_workers

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert _cpu_workers(None, cpu, (64, 256)) == 8  # small slices: capped at 8
    assert _cpu_workers(None, cpu, (768, 1024)) == 1  # large: one forward on all threads
    assert _cpu_workers(3, cpu, (768, 1024)) == 3
    assert _cpu_workers(None, cuda, (64, 256)) == _cpu_workers(4, cuda, (64, 256)) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert _cpu_workers(None, cpu, (64, 256)) == 1
    with pytest.raises(ValueError, match="cpu_workers"):
        ei.SegmentationParams(cpu_workers=0)


@pytest.mark.parametrize("workers", [2, 3])
def test_cpu_workers_give_the_same_labels(blob_model, blob_config, workers):
    vol, _ = moving_discs(n_slices=40)  # long enough for the probe
    threads = torch.get_num_threads()
    ref = segmenter(blob_model, blob_config, cpu_workers=1, batch_size=2).segment_stack(vol)
    out = segmenter(blob_model, blob_config, cpu_workers=workers, batch_size=2).segment_stack(vol)
    np.testing.assert_array_equal(out, ref)
    assert torch.get_num_threads() == threads  # restored after the run


def test_cpu_workers_errors_and_cancel_restore_threads(blob_model, blob_config, monkeypatch):
    vol, _ = moving_discs(n_slices=40)
    threads = torch.get_num_threads()
    seg = segmenter(blob_model, blob_config, cpu_workers=2)
    forward, calls = seg.forward, []

    def failing(images):
        calls.append(1)
        if len(calls) == 16:  # on a worker thread, after the probe switched to them
            raise RuntimeError("network failed")
        return forward(images)

    monkeypatch.setattr(seg, "forward", failing)
    with pytest.raises(RuntimeError, match="network failed"):
        seg.segment_stack(vol)
    assert torch.get_num_threads() == threads
    monkeypatch.setattr(seg, "forward", forward)
    seen = []
    with pytest.raises(ei.InferenceCancelled):
        seg.segment_stack(vol, should_stop=lambda: len(seen) > 15,
                          progress=lambda i, n: seen.append(i))
    assert torch.get_num_threads() == threads


class _Calls:
    """A stand-in forward: sleeps, and records how many calls overlap."""

    def __init__(self, seconds, serial_penalty):
        self.seconds, self.serial_penalty = seconds, serial_penalty
        self.active, self.overlapped, self.lock = 0, [], threading.Lock()

    def __call__(self, x):
        with self.lock:
            self.active += 1
            overlap = self.active > 1
        import time

        # when serial_penalty is set, overlapping calls are much slower (a shared resource)
        time.sleep(self.seconds * (4 if overlap and self.serial_penalty else 1))
        with self.lock:
            self.active -= 1
        self.overlapped.append((x, overlap))
        return x * 10


@pytest.mark.parametrize("serial_penalty", [False, True])
def test_parallel_if_faster_picks_the_faster_way_and_keeps_order(serial_penalty):
    from empanada_infer._threads import _parallel_if_faster

    threads = torch.get_num_threads()
    fn = _Calls(0.01, serial_penalty)
    items = list(range(40))
    assert list(_parallel_if_faster(fn, items, workers=2, probe=6)) == [10 * x for x in items]
    late = [overlap for x, overlap in fn.overlapped if x >= 20]
    assert any(late) != serial_penalty  # threads kept only when they were faster
    assert not any(overlap for x, overlap in fn.overlapped if x < 6)  # the sequential probe
    assert torch.get_num_threads() == threads


def test_parallel_if_faster_short_runs_and_early_close():
    from empanada_infer._threads import _parallel_if_faster

    threads = torch.get_num_threads()
    fn = _Calls(0.001, False)
    assert list(_parallel_if_faster(fn, range(5), workers=2)) == [0, 10, 20, 30, 40]
    assert not any(overlap for _, overlap in fn.overlapped)  # too short to probe
    gen = _parallel_if_faster(fn, range(100), workers=2, probe=3)
    assert [next(gen) for _ in range(5)] == [0, 10, 20, 30, 40]  # inside the threaded probe
    gen.close()
    assert torch.get_num_threads() == threads


# -- bf16 on the CPU: weights converted, or autocast when the model cannot ---------------
@pytest.fixture(scope="module")
def tiny_pdl_pr(tmp_path_factory):
    """A small real PDL-PR network, TorchScript, with a registry-style config."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = em.panoptic_deeplab_pr(encoder="regnety_200mf", decoder_channels=32,
                                 subdivision_num_points=256).eval()
    em.export_torchscript(net, folder / "tiny.pth")
    config = em.ModelConfig.from_dict(
        {"model": str(folder / "tiny.pth"), "norms": {"mean": 0.5, "std": 0.25},
         "padding_factor": 16, "thing_list": [1], "labels": [1], "class_names": {1: "mito"}},
        name="tiny")
    return folder / "tiny.pth", config


def test_cpu_bf16_converts_the_weights_and_keeps_float32_outputs(tiny_pdl_pr):
    path, config = tiny_pdl_pr
    fp32 = segmenter(torch.jit.load(str(path)), config, precision="fp32")
    bf16 = segmenter(torch.jit.load(str(path)), config, precision="bf16")
    assert not fp32._bf16_weights
    assert bf16._bf16_weights
    # bf16 weights, frozen with the point head's 1x1 conv1d as matmuls
    assert bf16._matmul_point_head > 0
    assert "aten::conv1d" not in str(bf16.model.graph)
    assert fp32._matmul_point_head == 0  # fp32 runs the original graph
    image = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    p32, c32, o32 = fp32.forward([image])
    p16, c16, o16 = bf16.forward([image])
    for a, b in ((p32, p16), (c32, c16), (o32, o16)):
        assert b.dtype == torch.float32
        assert a.shape == b.shape
    assert float((p32 - p16).abs().max()) < 0.05  # bf16 rounding, not a different network
    assert bf16.segment_image((image * 255).astype(np.uint8)).shape == (48, 64)


class _Fp32Only(torch.nn.Module):
    """Runs in fp32 and under autocast, fails with bf16 weights (fp32 constant)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, render_steps: int = 2, interpolate_ins: bool = True):
        fixed = torch.ones((x.shape[-1], x.shape[-1]), dtype=torch.float32)
        y = torch.matmul(x, fixed) * self.scale
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        return {"sem_logits": y, "ctr_hmp": torch.zeros((x.shape[0], 1, h, w)),
                "offsets": torch.zeros((x.shape[0], 2, h, w))}


def test_cpu_bf16_falls_back_to_autocast_and_fp32_weights(blob_config):
    seg = segmenter(torch.jit.script(_Fp32Only()), blob_config, precision="bf16")
    assert seg.precision == "bf16"
    assert not seg._bf16_weights
    assert {p.dtype for p in seg.model.parameters()} == {torch.float32}
    prob, _, _ = seg.forward([np.zeros((32, 32), np.float32)])
    assert prob.dtype == torch.float32


def test_cpu_bf16_leaves_models_without_float_weights_alone(blob_model, blob_config):
    seg = segmenter(blob_model, blob_config, precision="bf16")
    assert not seg._bf16_weights
    img, truth = discs((120, 120), CENTERS, 14)
    assert_same_partition(seg.segment_image(img) > 0, truth > 0)


def test_bf16_runs_keep_one_centre_per_plateau(monkeypatch, blob_model, blob_config):
    calls = []
    real = ec.panoptic_postprocess

    def spy(*args, **kwargs):
        calls.append(kwargs.get("center_plateaus"))
        return real(*args, **kwargs)

    import empanada_infer._segmenter as engine

    monkeypatch.setattr(engine.ec, "panoptic_postprocess", spy)
    img, _ = discs((64, 64), CENTERS[:1], 10)
    segmenter(blob_model, blob_config, precision="fp32").segment_image(img)
    segmenter(blob_model, blob_config, precision="bf16").segment_image(img)
    assert calls == ["all", "one"]


def test_auto_precision_on_amx_cpus_converts_and_rewrites(monkeypatch, tiny_pdl_pr):
    import empanada_infer._precision as engine

    path, config = tiny_pdl_pr
    monkeypatch.setattr(engine, "cpu_has_bf16_matrix_units", lambda: True)
    seg = segmenter(torch.jit.load(str(path)), config)
    assert seg.precision == "bf16"
    assert seg._bf16_weights
    assert seg._matmul_point_head > 0
    monkeypatch.setattr(engine, "cpu_has_bf16_matrix_units", lambda: False)
    seg = segmenter(torch.jit.load(str(path)), config)
    assert seg.precision == "fp32"
    assert not seg._bf16_weights
    assert seg._matmul_point_head == 0


def test_orthoplanes_return_the_stacks_in_plane_order(blob_model, blob_config):
    vol = np.full((6, 40, 30), 200, np.uint8)
    vol[:, 10:30, 8:22] = 40
    cons, stacks = segmenter(blob_model, blob_config, min_size=0, min_extent=0) \
        .segment_orthoplanes(vol, return_stacks=True)
    assert list(stacks) == ["xy", "xz", "yz"]
    assert all(v.shape == vol.shape for v in stacks.values())
    assert cons.shape == vol.shape


class _Conv1dHeads(torch.nn.Module):
    """1x1 conv1d layers (with and without bias) and some that must stay convolutions."""

    def __init__(self):
        super().__init__()
        self.pointwise = torch.nn.Conv1d(5, 7, 1)
        self.no_bias = torch.nn.Conv1d(7, 4, 1, bias=False)
        self.wide = torch.nn.Conv1d(4, 4, 3, padding=1)
        self.strided = torch.nn.Conv1d(4, 3, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.pointwise(x))
        for _ in range(2):  # a loop: conv1d calls inside sub-blocks are rewritten too
            y = y + 0.5
        return self.strided(self.wide(self.no_bias(y)))


def test_pointwise_conv1d_as_matmul_is_the_same_arithmetic():
    from empanada_infer._jit_rewrite import _pointwise_conv1d_as_matmul

    torch.manual_seed(0)
    module = torch.jit.script(_Conv1dHeads().eval())
    x = torch.randn(2, 5, 33)
    with torch.inference_mode():
        expected = module(x)
    rewritten, count = _pointwise_conv1d_as_matmul(module)
    assert count == 2  # pointwise and no_bias; the kernel-3 and strided convs stay
    graph = str(rewritten.graph)
    assert graph.count("aten::conv1d") == 2
    assert "aten::matmul" in graph
    with torch.inference_mode():
        torch.testing.assert_close(rewritten(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rewritten(x[:1]), module(x[:1]), rtol=1e-5, atol=1e-5)


def test_pointwise_conv1d_rewrite_leaves_other_models_alone():
    from empanada_infer._jit_rewrite import _pointwise_conv1d_as_matmul

    eager = _Conv1dHeads().eval()
    assert _pointwise_conv1d_as_matmul(eager) == (eager, 0)  # not TorchScript

    class NoConv1d(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    scripted = torch.jit.script(NoConv1d().eval())
    assert _pointwise_conv1d_as_matmul(scripted) == (scripted, 0)


def test_pointwise_conv1d_rewrite_keeps_the_pdl_pr_outputs(tiny_pdl_pr):
    from empanada_infer._jit_rewrite import _pointwise_conv1d_as_matmul

    path, _ = tiny_pdl_pr
    model = torch.jit.load(str(path)).eval()
    rewritten, count = _pointwise_conv1d_as_matmul(torch.jit.load(str(path)).eval())
    assert count > 0
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 1, 64, 96),
                                                                  dtype=np.float32))
    with torch.inference_mode():
        a, b = model(x, 2, True), rewritten(x, 2, True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4)


def test_matmul_rewrite_is_dropped_when_a_probe_disagrees(monkeypatch, tiny_pdl_pr):
    import empanada_infer._jit_rewrite as engine

    path, config = tiny_pdl_pr
    model = torch.jit.load(str(path)).eval().to(torch.bfloat16)

    class Shifted(torch.nn.Module):  # stands in for a rewrite gone wrong
        def forward(self, x, render_steps: int = 2, interpolate_ins: bool = True):
            out = model(x, render_steps, interpolate_ins)
            return {k: v + 1 for k, v in out.items()}

    monkeypatch.setattr(engine, "_pointwise_conv1d_as_matmul", lambda m: (Shifted(), 3))
    assert engine._checked_matmul_rewrite(model, config) == (model, 0)
    monkeypatch.setattr(engine, "_pointwise_conv1d_as_matmul", lambda m: (model, 3))
    assert engine._checked_matmul_rewrite(model, config) == (model, 3)


def test_with_params_shares_the_model_and_changes_run_settings(blob_model, blob_config):
    img, truth = discs((100, 130), CENTERS, 10)
    base = segmenter(blob_model, blob_config)
    semantic = base.with_params(base.params.with_options(semantic_only=True, label_divisor=100))
    assert semantic.model is base.model
    assert semantic.thing_list == ()
    assert base.thing_list == tuple(blob_config.thing_list)
    pan = semantic.segment_image(img)
    assert set(np.unique(pan)) == {0, 100}  # one semantic region, class 1 * divisor
    assert_same_partition(base.segment_image(img), truth)  # the original is unchanged
    with pytest.raises(ValueError, match="precision"):
        base.with_params(base.params.with_options(precision="bf16"))
    with pytest.raises(TypeError, match="SegmentationParams"):
        base.with_params({"semantic_only": True})
