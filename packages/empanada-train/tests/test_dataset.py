import numpy as np
import pytest
import tifffile
import torch
from skimage.measure import regionprops

from empanada_core.testing import data_path
from empanada_infer import normalize
from empanada_train._augment import default_train_augmentations, eval_transform
from empanada_train._dataset import (
    DEFAULT_NORMS,
    PanopticDataset,
    SingleClassInstanceDataset,
    compute_norms,
    example_weights,
    weighted_sampler,
)
from empanada_train._patches import pick_patches, pick_patches_from_file
from empanada_train._store import load_dataset, store_patches


def _patches(n=4, shape=(70, 90), size=32, seed=0, source="cells"):
    image = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    labels = np.zeros(shape, np.uint16)
    labels[5:25, 5:25] = 1
    labels[40:60, 50:80] = 2
    return pick_patches(image, labels=labels, patch_size=size, n_patches=n, seed=seed,
                        source=source)


# ---------------------------------------------------------------------- store


def test_store_then_load_round_trip(tmp_path):
    patches = _patches()
    written = store_patches(patches, [p.labels for p in patches], tmp_path, "ds")
    assert len(written) == 4
    items = load_dataset(tmp_path / "ds")
    assert len(items) == 4
    assert {s for _, _, s in items} == {"cells"}
    by_name = {p.stem: p for p in patches}
    for image_path, mask_path, _source in items:
        assert image_path.name == mask_path.name
        assert image_path.parent == tmp_path / "ds" / "cells" / "images"
        p = by_name[image_path.name[:-5]]
        np.testing.assert_array_equal(tifffile.imread(image_path), p.image)
        mask = tifffile.imread(mask_path)
        assert mask.dtype == np.uint32
        np.testing.assert_array_equal(mask, p.labels)


def test_store_crops_padding_and_saves_middle_flipbook_slice(tmp_path):
    volume = np.random.default_rng(0).integers(1, 255, (9, 20, 40), dtype=np.uint8)
    patches = pick_patches(volume, patch_size=32, n_patches=2, seed=0, source="vol")
    masks = [np.ones((5, 32, 32), np.int64) * (i + 1) for i in range(2)]
    store_patches(patches, masks, tmp_path, "ds")
    by_stem = {p.stem: p for p in patches}
    for image_path, mask_path, _ in load_dataset(tmp_path / "ds"):
        p = by_stem[image_path.name[:-5]]
        image = tifffile.imread(image_path)
        assert image.shape == (20, 32)
        z, y, x = p.origin
        np.testing.assert_array_equal(image, volume[z + 2, :, x:x + 32])
        assert tifffile.imread(mask_path).shape == (20, 32)


def test_store_accepts_plane_or_cropped_masks(tmp_path):
    (p,) = pick_patches(np.ones((20, 20), np.uint8), patch_size=32, n_patches=1)
    store_patches([p], [np.ones((20, 20), np.int32)], tmp_path, "a")
    store_patches([p], np.ones((1, 32, 32), np.int32), tmp_path, "b")
    for name in "ab":
        (item,) = load_dataset(tmp_path / name)
        assert tifffile.imread(item[1]).shape == (20, 20)


def test_store_appends_and_refuses_to_overwrite(tmp_path):
    first = _patches(seed=0)
    store_patches(first, [np.ones((32, 32), np.uint16)] * 4, tmp_path, "ds")
    second = _patches(n=2, seed=1, source="other")
    store_patches(second, [p.labels for p in second], tmp_path, "ds")
    assert len(load_dataset(tmp_path / "ds")) == 6
    with pytest.raises(ValueError, match="overwrite=True"):
        store_patches(first[:1], [np.zeros((32, 32), np.uint8)], tmp_path, "ds")
    (mask_path,) = [m for i, m, _ in load_dataset(tmp_path / "ds") if first[0].stem in i.name]
    assert tifffile.imread(mask_path).any()  # untouched
    store_patches(first[:1], [np.zeros((32, 32), np.uint8)], tmp_path, "ds", overwrite=True)
    assert not tifffile.imread(mask_path).any()


def test_store_source_override_and_duplicates(tmp_path):
    patches = _patches(n=2)
    written = store_patches(patches, [p.labels for p in patches], tmp_path, "ds", source="renamed")
    assert all(i.parent.parent.name == "renamed" and i.name.startswith("renamed-")
               for i, _ in written)
    with pytest.raises(ValueError, match="drop one"):
        store_patches([patches[0], patches[0]], [patches[0].labels] * 2, tmp_path, "dup")
    assert not (tmp_path / "dup").exists()  # nothing written


def test_store_mask_validation(tmp_path):
    (p,) = _patches(n=1)
    with pytest.raises(TypeError, match="boolean"):
        store_patches([p], [np.ones((32, 32), bool)], tmp_path, "ds")
    with pytest.raises(TypeError, match="integer"):
        store_patches([p], [np.ones((32, 32), np.float32)], tmp_path, "ds")
    with pytest.raises(ValueError, match="negative"):
        store_patches([p], [-np.ones((32, 32), np.int32)], tmp_path, "ds")
    with pytest.raises(ValueError, match="shape"):
        store_patches([p], [np.ones((31, 32), np.int32)], tmp_path, "ds")
    with pytest.raises(ValueError, match="1 patches but 2 masks"):
        store_patches([p], [p.labels, p.labels], tmp_path, "ds")
    with pytest.raises(TypeError, match="Patch"):
        store_patches([p.image], [p.labels], tmp_path, "ds")
    with pytest.raises(ValueError, match="dataset_name"):
        store_patches([p], [p.labels], tmp_path, "")
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------- load


def _write_pair(folder, name, value=1):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "images" / name, np.full((8, 8), value, np.uint8))
    tifffile.imwrite(folder / "masks" / name, np.full((8, 8), value, np.int32))


def test_load_pairs_by_name_and_ignores_stray_files(tmp_path):
    src = tmp_path / "ds" / "a"
    for i in (10, 2, 1):
        _write_pair(src, f"img{i}.tiff", value=i)
    (src / "images" / "Thumbs.db").write_bytes(b"junk")
    (src / "images" / ".DS_Store").write_bytes(b"junk")
    (src / "masks" / "._img1.tiff").write_bytes(b"junk")
    (src / "masks" / "notes.txt").write_text("hi")
    (tmp_path / "ds" / ".hidden").mkdir()
    items = load_dataset(tmp_path / "ds")
    assert [i.name for i, _, _ in items] == ["img1.tiff", "img2.tiff", "img10.tiff"]
    for image_path, mask_path, _ in items:
        assert tifffile.imread(image_path)[0, 0] == tifffile.imread(mask_path)[0, 0]


def test_load_missing_partner_is_named(tmp_path):
    src = tmp_path / "ds" / "a"
    _write_pair(src, "one.tiff")
    tifffile.imwrite(src / "images" / "two.tiff", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"two\.tiff has no mask"):
        load_dataset(tmp_path / "ds")
    (src / "images" / "two.tiff").unlink()
    tifffile.imwrite(src / "masks" / "three.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"three\.tif has no image"):
        load_dataset(tmp_path / "ds")


def test_load_several_roots_merges_sources(tmp_path):
    _write_pair(tmp_path / "r1" / "a", "x.tiff")
    _write_pair(tmp_path / "r2" / "a", "y.tiff")
    _write_pair(tmp_path / "r2" / "b", "z.tiff")
    items = load_dataset([tmp_path / "r1", str(tmp_path / "r2")])
    assert [(i.name, s) for i, _, s in items] == [("x.tiff", "a"), ("y.tiff", "a"),
                                                  ("z.tiff", "b")]
    # a source folder itself
    assert [s for _, _, s in load_dataset(tmp_path / "r2" / "b")] == ["b"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image/mask pairs"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "half" / "a" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="no masks/ folder"):
        load_dataset(tmp_path / "half")
    _write_pair(tmp_path / "twice" / "a", "x.tiff")
    tifffile.imwrite(tmp_path / "twice" / "a" / "images" / "x.png.tif", np.zeros((2, 2), np.uint8))
    tifffile.imwrite(tmp_path / "twice" / "a" / "images" / "x.tif", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="two files named 'x'"):
        load_dataset(tmp_path / "twice")


# ------------------------------------------------------------------- datasets


def _items(n=3):
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        mask = np.zeros((40, 48), np.int32)
        mask[5:15, 5:20] = 3
        mask[20:35, 25:45] = 9
        items.append((rng.integers(0, 256, (40, 48), dtype=np.uint8), mask, "ab"[i % 2]))
    return items


def test_single_class_item_shapes_and_dtypes():
    ds = SingleClassInstanceDataset(_items())
    assert len(ds) == 3
    assert ds.sources == ["a", "b", "a"]
    item = ds[0]
    assert item["image"].shape == (1, 40, 48)
    assert item["image"].dtype == torch.float32
    assert item["sem"].shape == (40, 48)
    assert item["sem"].dtype == torch.float32
    assert item["ctr_hmp"].shape == (1, 40, 48)
    assert item["ctr_hmp"].dtype == torch.float32
    assert item["offsets"].shape == (2, 40, 48)
    assert item["offsets"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64
    assert item["fname"] == "item0"
    assert set(item["sem"].unique().tolist()) == {0.0, 1.0}
    assert item["ctr_hmp"].max() == 1.0
    mean, std = DEFAULT_NORMS
    image = _items()[0][0]
    np.testing.assert_allclose(item["image"][0].numpy(), (image / 255 - mean) / std, atol=1e-5)


def test_uint16_normalisation_matches_inference():
    image = np.random.default_rng(0).integers(1000, 5000, (16, 16), dtype=np.uint16)
    mask = np.zeros((16, 16), np.uint8)
    ds = SingleClassInstanceDataset([(image, mask)], norms=(0.5, 0.2))
    expected = normalize(image, mean=0.5, std=0.2)  # percentile mode for uint16
    np.testing.assert_allclose(ds[0]["image"][0].numpy(), expected, atol=1e-5)
    ds_dtype = SingleClassInstanceDataset([(image, mask)], norms=(0.5, 0.2),
                                          intensity_mode="dtype")
    np.testing.assert_allclose(ds_dtype[0]["image"][0].numpy(),
                               normalize(image, mean=0.5, std=0.2, mode="dtype"), atol=1e-5)


def test_dataset_with_augmentations_and_loader():
    ds = SingleClassInstanceDataset(_items(4), transforms=default_train_augmentations(32))
    torch.manual_seed(0)
    first = ds[1]
    torch.manual_seed(0)
    again = ds[1]
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["mask"], again["mask"])
    assert first["image"].shape == (1, 32, 32)
    assert set(first["mask"].unique().tolist()) <= {0, 3, 9}
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=weighted_sampler(ds))
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, 32, 32)
    assert len(batch["fname"]) == 2


def test_dataset_reads_stored_files_and_int32_masks(tmp_path):
    _write_pair(tmp_path / "ds" / "src", "p.tiff", value=4)
    ds = SingleClassInstanceDataset(tmp_path / "ds", transforms=eval_transform(16))
    item = ds[0]
    assert item["fname"].endswith("p.tiff")
    assert item["image"].shape == (1, 16, 16)
    assert item["mask"][:8, :8].eq(4).all()
    assert not item["mask"][8:].any()


def test_dataset_errors(tmp_path):
    with pytest.raises(TypeError, match="items"):
        SingleClassInstanceDataset([np.zeros((4, 4))])
    with pytest.raises(ValueError, match="empty"):
        SingleClassInstanceDataset([])
    with pytest.raises(ValueError, match="std"):
        SingleClassInstanceDataset(_items(), norms=(0.5, 0))
    with pytest.raises(TypeError, match="transforms"):
        SingleClassInstanceDataset(_items(), transforms=3)
    with pytest.raises(ValueError, match="intensity_mode"):
        SingleClassInstanceDataset(_items(), intensity_mode="x")
    ds = SingleClassInstanceDataset([(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))])
    with pytest.raises(ValueError, match="differ in shape"):
        ds[0]
    ds = SingleClassInstanceDataset([(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32))])
    with pytest.raises(TypeError, match="integer"):
        ds[0]
    ds = SingleClassInstanceDataset([(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))])
    with pytest.raises(TypeError, match="colour"):
        ds[0]


def _panoptic_items():
    mask = np.zeros((32, 32), np.int32)
    mask[:4] = 1000  # stuff class 1
    mask[8:16, 8:16] = 2001  # thing class 2, two instances
    mask[20:28, 8:16] = 2002
    mask[20:28, 20:28] = 3005  # stuff class 3
    return [(np.zeros((32, 32), np.uint8), mask, "a")]


def test_panoptic_classes_and_thing_targets():
    ds = PanopticDataset(_panoptic_items(), labels=[1, 2, 3], thing_list=[2], label_divisor=1000)
    item = ds[0]
    mask = _panoptic_items()[0][1]
    assert item["sem"].dtype == torch.int64
    np.testing.assert_array_equal(item["sem"].numpy(), mask // 1000)
    thing = np.where(mask // 1000 == 2, mask, 0)
    heat, off = (torch.from_numpy(a) for a in _reference_targets(thing))
    assert torch.equal(item["ctr_hmp"], heat)
    assert torch.equal(item["offsets"], off)
    assert item["offsets"][:, :4].abs().sum() == 0  # stuff has no offsets
    ds.validate()


def _reference_targets(mask):
    from empanada_train._targets import heatmap_and_offsets

    return heatmap_and_offsets(mask)


def test_panoptic_stuff_only_has_empty_heatmap():
    ds = PanopticDataset(_panoptic_items(), labels=[1, 2, 3], thing_list=[], label_divisor=1000)
    assert not ds[0]["ctr_hmp"].any()


def test_panoptic_label_errors():
    items = _panoptic_items()
    with pytest.raises(ValueError, match="1..n"):
        PanopticDataset(items, labels=[1, 3], thing_list=[1], label_divisor=1000)
    with pytest.raises(ValueError, match="not in `labels`"):
        PanopticDataset(items, labels=[1, 2], thing_list=[3], label_divisor=1000)
    with pytest.raises(ValueError, match="label_divisor"):
        PanopticDataset(items, labels=[1, 2], thing_list=[2], label_divisor=1)
    with pytest.raises(TypeError, match="labels"):
        PanopticDataset(items, labels=["a"], thing_list=[], label_divisor=1000)
    ds = PanopticDataset(items, labels=[1, 2], thing_list=[2], label_divisor=1000)
    with pytest.raises(ValueError, match=r"classes \[3\]"):
        ds[0]
    with pytest.raises(ValueError, match=r"classes \[3\]"):
        ds.validate()
    small = [(np.zeros((4, 4), np.uint8), np.full((4, 4), 7, np.int32))]
    with pytest.raises(ValueError, match="below label_divisor"):
        PanopticDataset(small, labels=[1, 2], thing_list=[2], label_divisor=1000)[0]


# -------------------------------------------------------------------- weights


def test_example_weights_math():
    sources = ["a"] * 6 + ["b"] * 2
    w0 = example_weights(sources, gamma=0)
    np.testing.assert_allclose(w0, 0.5)  # uniform over images
    w1 = example_weights(sources, gamma=1)
    np.testing.assert_allclose([w1[:6].sum() / w1.sum(), w1[6:].sum() / w1.sum()], [0.5, 0.5])
    w = example_weights(sources, gamma=0.3)
    per = np.array([(1 / 6) ** 0.3, (1 / 2) ** 0.3])
    per /= per.sum()
    np.testing.assert_allclose(w, [per[0]] * 6 + [per[1]] * 2)
    with pytest.raises(ValueError, match="gamma"):
        example_weights(sources, gamma=-1)
    with pytest.raises(TypeError, match="gamma"):
        example_weights(sources, gamma=None)
    with pytest.raises(ValueError, match="empty"):
        example_weights([], 0.3)


def test_weighted_sampler():
    ds = SingleClassInstanceDataset(_items(3), weight_gamma=1.0)
    np.testing.assert_allclose(ds.weights, [1 / 3, 2 / 3, 1 / 3])
    sampler = weighted_sampler(ds, num_samples=1000, generator=torch.Generator().manual_seed(0))
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler)
    counts = np.bincount(list(sampler), minlength=3)
    assert counts.sum() == 1000
    assert abs(counts[1] - 500) < 60
    assert len(weighted_sampler([1.0, 2.0])) == 2
    with pytest.raises(ValueError, match="weights"):
        weighted_sampler([0.0, 0.0])
    with pytest.raises(ValueError, match="num_samples"):
        weighted_sampler([1.0], num_samples=0)


def test_compute_norms():
    items = [(np.full((4, 4), 51, np.uint8), np.zeros((4, 4), np.uint8)),
             (np.array([[0, 255]] * 2, np.uint8), np.zeros((2, 2), np.uint8))]
    mean, std = compute_norms(items)
    assert mean == pytest.approx((0.2 + 0.5) / 2, abs=1e-6)
    assert std == pytest.approx(0.25, abs=1e-6)


# --------------------------------------------------------------------- golden


@pytest.mark.realdata
def test_golden_lucchi_pick_store_load_targets(tmp_path):
    root = data_path("lucchi_epfl_hippocampus")
    patches = pick_patches_from_file(root / "images.tif", labels=root / "mito_instances_2d.tif",
                                     patch_size=256, n_patches=8, seed=0, source="lucchi")
    assert len(patches) == 8
    assert all(p.image.shape == (5, 256, 256) for p in patches)
    assert len({p.name for p in patches}) == 8
    store_patches(patches, [p.labels for p in patches], tmp_path, "lucchi_ds")
    items = load_dataset(tmp_path / "lucchi_ds")
    assert len(items) == 8
    ds = SingleClassInstanceDataset(items, weight_gamma=0.3)
    n_instances = 0
    for index, (_, mask_path, _) in enumerate(items):
        item = ds[index]
        mask = item["mask"].numpy()
        np.testing.assert_array_equal(mask, tifffile.imread(mask_path))
        assert item["image"].shape == (1, 256, 256)
        np.testing.assert_array_equal(item["sem"].numpy(), mask > 0)
        regions = regionprops(mask.astype(np.int32))
        n_instances += len(regions)
        if regions:
            assert item["ctr_hmp"].max() == 1.0
        off = item["offsets"].numpy()
        rows, cols = np.indices(mask.shape)
        for r in regions:  # every pixel points at its instance's centroid
            sel = mask == r.label
            np.testing.assert_allclose((rows + off[0])[sel], r.centroid[0], atol=1e-3)
            np.testing.assert_allclose((cols + off[1])[sel], r.centroid[1], atol=1e-3)
            assert item["ctr_hmp"][0, int(r.centroid[0]), int(r.centroid[1])] > 0.3
        assert not off[:, mask == 0].any()
    # golden figures (seed 0): flipbooks around these planes, 19 mitochondria profiles
    assert [i.name[len("lucchi-s0-LOC-0_"):].split("_")[0] for i, _, _ in items] == [
        "0-5", "2-7", "4-9", "16-21", "18-23", "30-35", "37-42", "50-55"]
    assert n_instances == 19
