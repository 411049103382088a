"""A TorchScript rewrite: PointRend's pointwise ``conv1d`` as one ``matmul``.

The point head of MitoNet-style models applies 1x1 ``conv1d`` layers to a few
thousand points; on the CPU a ``matmul`` does the same sums several times
faster. The rewrite changes the graph of a loaded TorchScript module in place
and is kept only when it gives the same outputs as the original graph.
"""

from __future__ import annotations

from empanada_models import quiet_torchscript

__all__ = []


def _pointwise_conv1d_as_matmul(model):
    """A frozen copy of a TorchScript ``model`` whose 1x1 ``conv1d`` calls are matmuls.

    PointRend's point head is a stack of kernel-1 Conv1d layers over thousands
    of points. With bf16 on x86 CPUs, torch's oneDNN ``conv1d`` reorders its
    output through a slow transposing copy (about 10x the time of the same
    product as a matmul; docs/performance.md), which made small bf16
    forwards no faster than fp32. The rewrite is the same arithmetic: ``W @ x
    + b[:, None]`` for every conv1d whose weight is a constant of kernel size 1
    with stride 1, no padding, dilation 1 and one group. Returns ``(model,
    count)``: the input unchanged and 0 when it is not a ScriptModule, cannot
    be frozen, or holds no such call.
    """
    import torch

    if not isinstance(model, torch.jit.ScriptModule):
        return model, 0
    try:
        with quiet_torchscript():
            frozen = torch.jit.freeze(model.eval())
    except (RuntimeError, TypeError, ValueError, AttributeError):
        return model, 0
    graph = frozen.graph
    count = _rewrite_pointwise_conv1d(graph.block(), graph)
    if not count:
        return model, 0
    torch._C._jit_pass_lint(graph)
    return frozen, count


def _checked_matmul_rewrite(model, config):
    """:func:`_pointwise_conv1d_as_matmul`, kept only if a probe image gives the same
    outputs (up to bf16 rounding) as ``model``; else ``(model, 0)``."""
    import torch

    rewritten, count = _pointwise_conv1d_as_matmul(model)
    if not count:
        return model, 0
    factor = int(config.padding_factor)
    size = 4 * factor
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((1, 1, size, size), generator=generator).to(torch.bfloat16)
    try:
        with torch.inference_mode():
            ref, out = model(probe, 2, True), rewritten(probe, 2, True)
        same = ref.keys() == out.keys() and all(
            ref[k].shape == out[k].shape
            and float((ref[k].float() - out[k].float()).abs().mean()) <= 0.05
            for k in ref)
    except (RuntimeError, TypeError, ValueError):
        same = False
    return (rewritten, count) if same else (model, 0)


def _constant(value):
    """The constant behind a graph value, or a sentinel when it is not one."""
    if value.node().kind() != "prim::Constant":
        return _NOT_CONSTANT
    return value.toIValue()


_NOT_CONSTANT = object()


def _rewrite_pointwise_conv1d(block, graph):
    import torch

    count = 0
    for node in list(block.nodes()):
        for sub in node.blocks():
            count += _rewrite_pointwise_conv1d(sub, graph)
        if node.kind() != "aten::conv1d" or len(list(node.inputs())) != 7:
            continue
        x, w, b, stride, padding, dilation, groups = node.inputs()
        weight, bias = _constant(w), _constant(b)
        if not (isinstance(weight, torch.Tensor) and weight.dim() == 3
                and weight.shape[-1] == 1):
            continue
        if bias is _NOT_CONSTANT or (bias is not None and not isinstance(bias, torch.Tensor)):
            continue
        settings = [_constant(v) for v in (stride, padding, dilation, groups)]
        if any(v is _NOT_CONSTANT for v in settings):
            continue
        stride, padding, dilation, groups = settings
        if not (list(stride) == [1] and list(padding) == [0] and list(dilation) == [1]
                and groups == 1):
            continue
        graph.setInsertPoint(node)
        out = graph.insertNode(graph.create(
            "aten::matmul", [graph.insertConstant(weight[:, :, 0].contiguous()), x])).output()
        if bias is not None:
            out = graph.insertNode(graph.create(
                "aten::add", [out, graph.insertConstant(bias[:, None].contiguous()),
                              graph.insertConstant(1)])).output()
        out.setType(node.output().type())
        node.output().replaceAllUsesWith(out)
        node.destroy()
        count += 1
    return count
