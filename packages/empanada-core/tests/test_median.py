import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import empanada_core as ec


def reference(stack, size):
    """Median over a symmetric window that shrinks at the ends of the stack."""
    n = len(stack)
    out = []
    for i in range(n):
        r = min(size // 2, i, n - 1 - i)
        out.append(np.median(stack[i - r : i + r + 1], axis=0))
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), size=st.sampled_from([1, 3, 5, 7, 9, 11]), seed=st.integers(0, 999))
def test_equals_reference_for_any_length(n, size, seed):
    stack = np.random.default_rng(seed).random((n, 2, 3, 4)).astype(np.float32)
    got = list(ec.median_filter_stack(list(stack), size))
    assert len(got) == n
    for g, r in zip(got, reference(stack, size)):
        np.testing.assert_allclose(g, r)


def test_not_recursive():
    # The original's recursive median turns this series to all zeros.
    series = [0, 9, 0, 9, 0, 9, 0, 0, 0]
    got = [int(v[0]) for v in ec.median_filter_stack([np.array([s]) for s in series], 3)]
    assert got == [0, 0, 9, 0, 9, 0, 0, 0, 0]


def test_payload_travels_with_its_slice():
    f = ec.MedianFilter(5)
    out = []
    for i in range(7):
        out += f.push(np.full(2, float(i)), payload=f"p{i}")
    out += f.finish()
    assert [(i, p) for i, _, p in out] == [(i, f"p{i}") for i in range(7)]


def test_filter_is_reusable_after_finish():
    f = ec.MedianFilter(3)
    for _ in range(2):
        out = f.push(np.zeros(1)) + f.push(np.ones(1)) + f.finish()
        assert [i for i, _, _ in out] == [0, 1]


def test_interior_equals_scipy_median():
    from scipy import ndimage

    stack = np.random.default_rng(1).random((10, 5, 5))
    got = np.stack(list(ec.median_filter_stack(list(stack), 5)))
    ref = ndimage.median_filter(stack, size=(5, 1, 1))
    np.testing.assert_allclose(got[2:-2], ref[2:-2])


@pytest.mark.parametrize("size", [0, 2, 4, -3])
def test_even_or_nonpositive_size(size):
    with pytest.raises(ValueError, match="`size` must be"):
        ec.MedianFilter(size)


def test_shape_change_raises():
    f = ec.MedianFilter(3)
    f.push(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="slice 1 has shape"):
        f.push(np.zeros((3, 3)))


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    stack = torch.rand(6, 1, 4, 4)
    got = torch.stack(list(ec.median_filter_stack(list(stack), 3)))
    np.testing.assert_allclose(got.numpy(), np.stack(reference(stack.numpy(), 3)))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), size=st.sampled_from([1, 3, 5]), data=st.data())
def test_started_filter_equals_the_full_run_from_start_plus_radius(n, size, data):
    rng = np.random.default_rng(n * 7 + size)
    slices = [rng.random((2, 3)) for _ in range(n)]
    resume_at = data.draw(st.integers(0, n - 1))
    radius = size // 2
    first = max(0, resume_at - radius)
    f = ec.MedianFilter(size)
    full = {}
    for s in slices:
        full.update({i: v for i, v, _ in f.push(s)})
    full.update({i: v for i, v, _ in f.finish()})
    g = ec.MedianFilter(size, start=first)
    part = {}
    for s in slices[first:]:
        part.update({i: v for i, v, _ in g.push(s)})
    part.update({i: v for i, v, _ in g.finish()})
    assert sorted(part) == list(range(first, n))
    for i in range(resume_at, n):
        np.testing.assert_array_equal(part[i], full[i])


def test_start_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="start"):
        ec.MedianFilter(3, start=-1)
