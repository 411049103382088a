"""Golden tests on the real Lucchi FIB-SEM mitochondria labels (skipped when absent)."""

import numpy as np
import pytest

import empanada_proofread as ep

pytestmark = pytest.mark.realdata


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def inner_point(labels, label_id):
    """The voxel deepest inside label ``label_id`` (distance transform in its box)."""
    from scipy import ndimage as ndi

    box = ndi.find_objects((labels == label_id).astype(np.uint8))[0]
    mask = np.pad(labels[box] == label_id, 1)
    local = np.unravel_index(np.argmax(ndi.distance_transform_edt(mask)), mask.shape)
    return tuple(int(c - 1 + s.start) for c, s in zip(local, box))


def test_merge_then_split_recovers_the_objects(lucchi):
    labels = lucchi.astype(np.uint32)
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    big = ids[np.argsort(sizes)[::-1][:6]]
    editor = ep.LabelEditor(labels)
    for a, b in zip(big[0::2], big[1::2]):
        pa, pb = inner_point(lucchi, a), inner_point(lucchi, b)
        merged = editor.merge([pa, pb])
        assert merged.new_ids == (min(a, b),)
        split = editor.split([pa, pb], points_as_markers=True)
        assert len(split.new_ids) == 1
        ia, ib = labels[pa], labels[pb]
        assert ia != ib
        assert iou(labels == ia, lucchi == a) >= 0.9
        assert iou(labels == ib, lucchi == b) >= 0.9
    while editor.can_undo:
        editor.undo()
    np.testing.assert_array_equal(labels, lucchi)


def test_locate_count_and_boundary_match_skimage(lucchi, tmp_path):
    from skimage.measure import regionprops
    from skimage.segmentation import clear_border

    labels = lucchi.copy()
    props = {p.label: p for p in regionprops(labels)}
    table = ep.count_labels(labels, path=tmp_path / "lucchi.csv")
    assert table.columns["label_id"].tolist() == sorted(props)
    assert table.columns["voxels"].tolist() == [props[i].area for i in sorted(props)]
    for label_id, prop in props.items():
        loc = ep.locate_label(labels, label_id)
        assert loc.bbox_min + loc.bbox_max == tuple(prop.bbox)
        assert labels[loc.point] == label_id
    expected = clear_border(lucchi)
    ep.remove_boundary_labels(labels)
    np.testing.assert_array_equal(labels, expected)
    assert (tmp_path / "lucchi.csv").read_text().count("\n") == len(props) + 1


def test_zarr_and_numpy_agree_on_lucchi(lucchi, make_zarr):
    labels = lucchi.astype(np.uint32)
    z, store = make_zarr(labels, (16, 128, 128), counting=True)
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    pts = [inner_point(lucchi, i) for i in ids[np.argsort(sizes)[-3:]]]
    for arr in (labels, z):
        ep.merge_labels(arr, pts[:2])
        ep.morph_labels(arr, operation="dilate", radius=2)
        ep.delete_labels(arr, pts[2:], in_3d=False)
    np.testing.assert_array_equal(labels, z[...])
