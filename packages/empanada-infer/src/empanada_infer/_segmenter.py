"""Inference engines: 2D images, stacks along one axis, and ortho-plane consensus.

A :class:`Segmenter` holds a loaded model, its config and the run settings. It
turns a 2D greyscale image into network outputs (normalise, downsample by a power
of two, pad to the model's ``padding_factor``, forward with PointRend rendering
back to full size) and then into panoptic ids with :mod:`empanada_core`.

Volumes are processed slice by slice along one axis. Slices go through the
network in batches on a background thread, while the main thread median-filters
the probabilities, postprocesses each slice and links it into 3D objects
(:class:`empanada_core.StackAssembler`) written straight into the output array.
A bounded queue keeps at most a few batches of network outputs in memory.
"""

from __future__ import annotations

import copy
import math

import numpy as np

import empanada_core as ec
from empanada_models import resolve_model_config

from ._image_io import intensity_range, normalize
from ._jit_rewrite import _checked_matmul_rewrite
from ._ortho import ortho_merge
from ._params import (
    PLANES,
    SegmentationParams,
    _axis,
    _check_stop,
    _fit_min_extent,
)
from ._precision import _resolve_device, _resolve_precision, _to_bf16_weights
from ._threads import _background, _cpu_workers, _forward_in_background, _parallel_if_faster

__all__ = ["Segmenter", "segment_image", "segment_stack", "segment_orthoplanes"]


class Segmenter:
    """A model ready to segment images, with its config and run settings.

    Parameters
    ----------
    model : torch.nn.Module or torch.jit.ScriptModule
        Called as ``model(x, render_steps, interpolate_ins)`` returning a dict
        with ``sem_logits``, ``ctr_hmp`` and ``offsets``.
    config : empanada_models.ModelConfig
        Its registry config (norms, padding factor, classes).
    params : SegmentationParams, optional
    device : str or torch.device, optional
        ``'auto'`` picks CUDA when available.

    Examples
    --------
    >>> seg = Segmenter.from_registry("MitoNet_v1", device="cpu")  # doctest: +SKIP
    >>> labels = seg.segment_image(image)                          # doctest: +SKIP
    """

    def __init__(self, model, config, params=None, *, device="auto"):
        import torch

        self.params = params if params is not None else SegmentationParams()
        self.config = config
        self.device = _resolve_device(device)
        self.model = model.to(self.device).eval()
        self._torch = torch
        use_cl = self.params.channels_last
        self.channels_last = (self.device.type in ("cuda", "cpu") if use_cl is None
                              else bool(use_cl))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = _resolve_precision(self.params.precision, self.device)
        # On the CPU, bf16 weights beat autocast (which re-casts every weight at
        # every forward; docs/performance.md). Models that cannot run
        # with bf16 weights (int8, fp32-only ops) run under autocast instead.
        self._bf16_weights = (self.precision == "bf16" and self.device.type == "cpu"
                              and _to_bf16_weights(self.model, self.config))
        self._matmul_point_head = 0
        if self._bf16_weights:
            self.model, self._matmul_point_head = _checked_matmul_rewrite(self.model,
                                                                          self.config)
        self.thing_list = () if self.params.semantic_only else tuple(config.thing_list)

    @classmethod
    def from_registry(cls, name_or_config=None, params=None, *, device="auto", quantized=False,
                      progress=None):
        """Load a registered model (the registry default when ``None``)."""
        import empanada_models as em

        config = resolve_model_config(name_or_config)
        dev = _resolve_device(device)
        model = em.load_model(config, device=dev, quantized=quantized, progress=progress)
        return cls(model, config, params, device=dev)

    #: settings fixed when the model is prepared (weights converted, memory format)
    _MODEL_SETTINGS = ("precision", "channels_last")

    def with_params(self, params):
        """A Segmenter sharing this one's prepared model, with other run settings.

        Lets a caller (the napari widgets) keep one loaded model per device and
        run it with new thresholds without loading or converting it again.

        Raises
        ------
        ValueError
            ``params`` changes ``precision`` or ``channels_last``, which are
            applied to the model itself when it is prepared.
        """
        if not isinstance(params, SegmentationParams):
            raise TypeError(f"`params` must be SegmentationParams; got {type(params).__name__}")
        for name in self._MODEL_SETTINGS:
            if getattr(params, name) != getattr(self.params, name):
                raise ValueError(
                    f"`{name}` is fixed when the model is prepared ({getattr(self.params, name)!r}"
                    f" here, {getattr(params, name)!r} asked); make a new Segmenter")
        other = copy.copy(self)
        other.params = params
        other.thing_list = () if params.semantic_only else tuple(self.config.thing_list)
        return other

    # -- one batch through the network ---------------------------------------------------
    def _prepare(self, images):
        """Normalised, downsampled, padded (N, 1, Hp, Wp) tensor on the device."""
        torch = self._torch
        F = torch.nn.functional
        s = self.params.downsampling
        x = torch.from_numpy(np.stack(images)[:, None]).to(self.device, non_blocking=True)
        h, w = x.shape[-2:]
        if s > 1:
            x = F.interpolate(x, size=(math.ceil(h / s), math.ceil(w / s)), mode="bilinear",
                              align_corners=False)
        factor = int(self.config.padding_factor)
        ph = (-x.shape[-2]) % factor
        pw = (-x.shape[-1]) % factor
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images):
        """Network outputs for a batch of normalised 2D images of one shape.

        Returns probabilities ``(N, C, H', W')``, heatmaps ``(N, h, w)`` and
        offsets ``(N, 2, h, w)`` as float32 tensors on the device, where
        ``H' >= H`` is the padded full size.
        """
        torch = self._torch
        x = self._prepare(images)
        if self._bf16_weights:
            x = x.to(torch.bfloat16)
        render_steps = 2 + int(math.log2(self.params.downsampling))
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.precision == "bf16" and not self._bf16_weights)
        with torch.inference_mode(), autocast:
            out = self.model(x, render_steps, bool(self.params.fine_boundaries))
        logits = out["sem_logits"].float()
        _check_classes(logits.shape[1], self.config)
        prob = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        return prob, out["ctr_hmp"].float()[:, 0], out["offsets"].float()

    def postprocess(self, prob, ctr, offsets, out_shape):
        """Panoptic ids of one image from its (C, H', W') probabilities and heads."""
        p = self.params
        pan = ec.panoptic_postprocess(
            prob, ctr, offsets, thing_list=self.thing_list, label_divisor=p.label_divisor,
            confidence_thr=p.confidence_thr, center_thr=p.center_thr, nms_kernel=p.min_distance,
            center_stride=1 if p.fine_boundaries else 4, stuff_area=p.stuff_area,
            semantic_only=p.semantic_only, out_shape=out_shape, on_overflow=p.on_overflow,
            # bf16 heatmaps have exact ties at maxima, which would split objects
            center_plateaus="one" if self.precision == "bf16" else "all",
        )
        if not isinstance(pan, np.ndarray):
            pan = pan.cpu().numpy()
        return pan.astype(ec.label_dtype(int(pan.max()) if pan.size else 0), copy=False)

    def normalize(self, image, value_range=None):
        norms = self.config.norms
        return normalize(np.asarray(image), mean=norms.mean, std=norms.std,
                         mode=self.params.normalize, value_range=value_range)

    def value_range(self, image):
        """Intensity range used for every slice of ``image`` (None in dtype mode)."""
        mode = self.params.normalize
        dtype = np.dtype(image.dtype)
        if mode == "dtype" or (mode == "auto" and dtype == np.uint8):
            return None
        return intensity_range(image, mode="percentile")

    # -- public ------------------------------------------------------------------------
    def segment_image(self, image, *, value_range=None):
        """Panoptic segmentation of one 2D image.

        Returns
        -------
        (H, W) uint32 ndarray of ``class * label_divisor + k`` ids.
        """
        image = _check_image(image, ndim=2)
        if value_range is None:
            value_range = self.value_range(image)
        tile = self.params.tile_size
        if _is_constant(image):
            # no structure, no organelle; a network's flat output would otherwise make
            # every pixel of its flat heatmap a centre (hundreds of objects)
            return np.zeros(image.shape, np.uint32)
        if tile and max(image.shape) > tile:
            prob, ctr, off = self._forward_tiled(image, value_range)
            return self.postprocess(prob, ctr, off, image.shape)
        prob, ctr, off = self.forward([self.normalize(image, value_range)])
        return self.postprocess(prob[0], ctr[0], off[0], image.shape)

    def _forward_tiled(self, image, value_range):
        """Network outputs of a large image, stitched from overlapping tiles.

        Each tile is run with ``tile_overlap`` pixels of context on every side
        and only its centre is kept, so the stitched maps cover the image once.
        Offsets point from a pixel to its centre, so they stitch unchanged.
        """
        torch = self._torch
        p = self.params
        s = p.downsampling
        grid = s if p.fine_boundaries else 4 * s  # image pixels per heatmap pixel
        unit = grid * int(self.config.padding_factor)
        step = max(unit, (p.tile_size // unit) * unit)
        margin = -(-p.tile_overlap // grid) * grid
        h, w = image.shape
        gh, gw = -(-h // grid), -(-w // grid)
        prob = ctr = off = None
        for y0 in range(0, h, step):
            for x0 in range(0, w, step):
                ty0, tx0 = max(0, y0 - margin), max(0, x0 - margin)
                ty1, tx1 = min(h, y0 + step + margin), min(w, x0 + step + margin)
                tile = self.normalize(image[ty0:ty1, tx0:tx1], value_range)
                t_prob, t_ctr, t_off = self.forward([tile])
                if prob is None:
                    prob = torch.zeros((t_prob.shape[1], gh * grid, gw * grid),
                                       device=t_prob.device)
                    ctr = torch.zeros((gh, gw), device=t_prob.device)
                    off = torch.zeros((2, gh, gw), device=t_prob.device)
                ky1, kx1 = min(h, y0 + step), min(w, x0 + step)
                # keep [y0, ky1) x [x0, kx1): at full resolution, then on the heatmap grid
                prob[:, y0:ky1, x0:kx1] = t_prob[0, :, y0 - ty0:ky1 - ty0, x0 - tx0:kx1 - tx0]
                gy0, gx0 = y0 // grid, x0 // grid
                gy1, gx1 = -(-ky1 // grid), -(-kx1 // grid)
                oy, ox = ty0 // grid, tx0 // grid
                ctr[gy0:gy1, gx0:gx1] = t_ctr[0, gy0 - oy:gy1 - oy, gx0 - ox:gx1 - ox]
                off[:, gy0:gy1, gx0:gx1] = t_off[0, :, gy0 - oy:gy1 - oy, gx0 - ox:gx1 - ox]
        return prob, ctr, off

    def segment_batch(self, images, *, progress=None, should_stop=None):
        """Segment a list of unrelated 2D images (each normalised on its own)."""
        results = []
        for i, image in enumerate(images):
            _check_stop(should_stop)
            results.append(self.segment_image(image))
            if progress is not None:
                progress(i + 1, len(images))
        return results

    def iter_stack(self, volume, *, axis=0, value_range=None, should_stop=None, start=0):
        """Yield ``(index, panoptic slice)`` along ``axis``, median-filtered, in order.

        ``start`` skips the slices before it (a resumed run): the network then
        runs from ``start - median_size // 2`` on, so the yielded slices equal
        those of a run over the whole stack.

        On an accelerator the network runs on a background thread, a bounded
        queue ahead, so postprocessing overlaps it. On the CPU, forwards of
        large slices run in this thread on all torch threads (from a second
        thread they ran ~40 % slower: a second OpenMP pool); small slices go
        through ``cpu_workers`` single-threaded forwards at once.
        """
        volume = _check_image(volume, ndim=3)
        if value_range is None:
            value_range = self.value_range(volume)
        n = volume.shape[axis]
        slice_shape = tuple(s for a, s in enumerate(volume.shape) if a != axis)
        batch = self.params.batch_size

        def forward_batch(start):
            images = [self.normalize(_take(volume, i, axis), value_range)
                      for i in range(start, min(start + batch, n))]
            return self.forward(images)

        if start >= n:
            return
        first = max(0, start - self.params.median_size // 2)
        starts = range(first, n, batch)
        workers = _cpu_workers(self.params.cpu_workers, self.device, slice_shape)
        if _forward_in_background(self.device):
            batches = _background(map(forward_batch, starts))
        elif workers > 1:
            batches = _parallel_if_faster(forward_batch, starts, workers)
        else:
            batches = map(forward_batch, starts)
        median = ec.MedianFilter(self.params.median_size, start=first)
        try:
            for prob, ctr, off in batches:
                ready = []
                for j in range(prob.shape[0]):
                    ready += median.push(prob[j], payload=(ctr[j], off[j]))
                for index, p, (c, o) in ready:
                    if index >= start:
                        _check_stop(should_stop)
                        yield index, self.postprocess(p, c, o, slice_shape)
            for index, p, (c, o) in median.finish():
                if index >= start:
                    _check_stop(should_stop)
                    yield index, self.postprocess(p, c, o, slice_shape)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def segment_stack(self, volume, out=None, *, axis=0, progress=None, should_stop=None,
                      value_range=None, checkpoint=None):
        """Segment a volume slice by slice along ``axis`` and link slices into 3D objects.

        Parameters
        ----------
        volume : (Z, Y, X) array-like
        out : array-like, optional
            Output (numpy or zarr) of the volume's shape; created (uint32) if None.
        axis : int or {'xy', 'xz', 'yz'}
        progress : callable, optional
            ``progress(done, total)`` after each slice.
        should_stop : callable, optional
            Checked between slices; when it returns True the run stops with
            :class:`InferenceCancelled`.
        checkpoint : zarr.Array, optional
            An array of the volume's shape made by :func:`create_output` (with
            ``slice_axis=axis``) that keeps each slice's 2D result as soon as it
            is computed, recorded with :func:`mark_done`. A run that was killed
            or cancelled resumes from its first unfinished slice and gives the
            same volume as an uninterrupted run.

        Returns
        -------
        out : the filled array (ids ``class * label_divisor + k``)
        """
        volume = _check_image(volume, ndim=3)
        return self._segment_stack(volume, out, _axis(axis), progress, should_stop, value_range,
                                   _fit_min_extent(self.params, volume.shape), checkpoint)

    def _segment_stack(self, volume, out, axis, progress, should_stop, value_range, p,
                       checkpoint=None):
        from ._writers import done_keys, mark_done

        blank = out is None
        if blank:
            out = np.zeros(volume.shape, dtype=np.uint32)
        n = volume.shape[axis]
        resume_at = 0
        if checkpoint is not None:
            if tuple(checkpoint.shape) != tuple(volume.shape):
                raise ValueError(f"`checkpoint` has shape {tuple(checkpoint.shape)}; the "
                                 f"volume has {tuple(volume.shape)}")
            done = {k for k in done_keys(checkpoint) if isinstance(k, int)}
            while resume_at in done:
                resume_at += 1
        assembler = ec.StackAssembler(
            out, axis=axis, label_divisor=p.label_divisor, thing_list=self.thing_list,
            min_size=p.min_size, min_extent=p.min_extent, on_overflow=p.on_overflow,
            out_is_blank=blank,
        )
        for index in range(resume_at):  # finished before: read back, not recomputed
            assembler.push(np.asarray(_take(checkpoint, index, axis)))
        if resume_at and progress is not None:
            progress(resume_at, n)
        for index, pan in self.iter_stack(volume, axis=axis, value_range=value_range,
                                          should_stop=should_stop, start=resume_at):
            if checkpoint is not None:
                _put(checkpoint, index, axis, pan)
                mark_done(checkpoint, index)
            assembler.push(pan)
            if progress is not None:
                progress(index + 1, n)
        assembler.finish()
        return out

    def segment_orthoplanes(self, volume, out=None, *, return_stacks=False, progress=None,
                            should_stop=None, checkpoints=None):
        """Segment along xy, xz and yz and keep what the views agree on.

        Parameters
        ----------
        checkpoints : dict of {'xy', 'xz', 'yz': zarr.Array}, optional
            One checkpoint per plane (see :meth:`segment_stack`), so a killed or
            cancelled run resumes from the first unfinished slice of each plane.

        Returns
        -------
        out : consensus panoptic volume; with ``return_stacks`` also a dict
            ``{'xy': ..., 'xz': ..., 'yz': ...}`` of the three stacks.
        """
        volume = _check_image(volume, ndim=3)
        value_range = self.value_range(volume)
        stacks = {}
        n_total = sum(volume.shape)
        done = dict.fromkeys(PLANES, 0)
        checkpoints = checkpoints or {}
        unknown = set(checkpoints) - set(PLANES)
        if unknown:
            raise ValueError(f"`checkpoints` keys must be among {sorted(PLANES)}; got "
                             f"{sorted(unknown)}")

        params = _fit_min_extent(self.params, volume.shape)
        for name, axis in PLANES.items():

            def step(i, _n, name=name):
                done[name] = i
                if progress is not None:
                    progress(sum(done.values()), n_total)

            stacks[name] = self._segment_stack(volume, None, axis, step, should_stop,
                                               value_range, params, checkpoints.get(name))
        consensus = ortho_merge(stacks, params, self.config, out=out,
                                thing_list=self.thing_list)
        return (consensus, stacks) if return_stacks else consensus


def _check_classes(channels, config):
    """The config's classes must be outputs of the network (else results are silently empty).

    One channel is a binary network (sigmoid) with one class; C > 1 channels are
    softmax scores of background and classes 1 .. C-1.
    """
    labels = tuple(config.labels)
    if channels == 1:
        if len(labels) != 1:
            raise ValueError(
                f"model {config.name!r}: its config lists {len(labels)} classes (labels "
                f"{list(labels)}) but the network has 1 output channel (one class); fix "
                f"`labels`, `class_names` and `thing_list` in {config.source or 'the config'}"
            )
    elif max(labels) >= channels:
        raise ValueError(
            f"model {config.name!r}: its config lists class {max(labels)} but the network "
            f"has {channels} output channels (background and classes 1..{channels - 1}); "
            f"fix `labels` in {config.source or 'the config'}"
        )


def _take(volume, i, axis):
    index = [slice(None)] * 3
    index[axis] = i
    return np.asarray(volume[tuple(index)])


def _is_constant(image):
    image = np.asarray(image)
    return image.size > 0 and image.min() == image.max()


def _put(volume, i, axis, values):
    index = [slice(None)] * 3
    index[axis] = i
    volume[tuple(index)] = values


def _check_image(image, *, ndim):
    from ._image_io import check_image

    return check_image(image, ndim=ndim)


def segment_image(image, model=None, params=None, *, device="auto", quantized=False):
    """Segment one 2D image with a registered model (default: the registry default)."""
    return Segmenter.from_registry(model, params, device=device, quantized=quantized) \
        .segment_image(image)


def segment_stack(volume, model=None, params=None, *, axis=0, out=None, device="auto",
                  quantized=False, progress=None):
    """Segment a volume along one axis with a registered model."""
    seg = Segmenter.from_registry(model, params, device=device, quantized=quantized)
    return seg.segment_stack(volume, out, axis=axis, progress=progress)


def segment_orthoplanes(volume, model=None, params=None, *, out=None, device="auto",
                        quantized=False, return_stacks=False, progress=None):
    """Segment a volume along xy, xz and yz and return the consensus."""
    seg = Segmenter.from_registry(model, params, device=device, quantized=quantized)
    return seg.segment_orthoplanes(volume, out, return_stacks=return_stacks, progress=progress)
