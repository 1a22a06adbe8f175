"""Matrix products of compiled CPU steps through oneDNN instead of MKL.

On the CPU, PyTorch computes float32 `mm` and `addmm`, eager or compiled by inductor, with MKL's
sgemm. MKL runs its AVX-512 kernels only on Intel processors; on AMD ones it takes an AVX2 path
(pytorch/pytorch#38412), at half the peak of a core with AVX-512. oneDNN, which ships inside
the same torch wheel and picks its kernels by instruction set alone, runs AVX-512 there. On the
reference machine (2 cores of an AMD EPYC Zen 5), 10,000 x 128 @ 128 x 128 took 1.98 ms by MKL
and 0.91 ms by oneDNN, both 5.4e-7 from the float64 product relative to its largest entry. On
Intel processors the two were reported at par (intel/intel-extension-for-pytorch#475); no Intel
machine was at hand to measure it here.

`OneDnnMatmuls` is an inductor post-grad pass: it rewrites each float32 CPU `mm` and `addmm` of
a compiled graph with at least `MIN_MULTIPLY_ADDS` multiply-adds into `ebmlab::onednn_addmm`, a
custom op that calls oneDNN's inner product. Smaller products keep MKL: the op's dispatch costs
10-20 us, which ate the gain at 256 x 128 @ 128 x 128 (4.2e6 multiply-adds: 54 us by MKL, 57 us
through the op) and on thin products (inner or outer size 1 or 2) of up to a few thousand rows.
Inductor's own oneDNN linear lowering needs weights frozen into the graph as constants, which
would go stale at the next optimiser step, so the op goes through `torch.library` and reaches
the compiled code as an extern kernel.
"""

from __future__ import annotations

import hashlib
import inspect

import torch
from torch import Tensor, fx
from torch._inductor.custom_graph_pass import CustomGraphPass

MIN_MULTIPLY_ADDS = 1 << 23  # 512 x 128 @ 128 x 128: 102 us by MKL, 80 us through the op
aten = torch.ops.aten


def onednn_can_replace_mkl() -> bool:
    """MKL computes this build's float32 products and oneDNN's inner product is there: the x86
    builds of torch. Elsewhere (ARM, OpenBLAS builds) the pass has nothing to replace."""
    return (
        torch.backends.mkl.is_available()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


@torch.library.custom_op("ebmlab::onednn_addmm", mutates_args=())
def onednn_addmm(bias: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """a @ b + bias (bias optional, 1-D) by oneDNN's inner product, which takes a @ weight^T:
    b enters as its transpose (a view). Registered when this module is imported, before any
    compilation, so that compiled code read back from inductor's cache finds it."""
    return torch.ops.mkldnn._linear_pointwise(a, b.t(), bias, "none", [], "")


@onednn_addmm.register_fake
def _(bias: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], b.shape[1])


def _operands(node: fx.Node) -> tuple[fx.Node | None, fx.Node, fx.Node] | None:
    """(bias, a, b) of an `mm` or of an `addmm` with alpha = beta = 1 and a 1-D bias."""
    if node.target is aten.mm.default:
        return (None, *node.args)
    if node.target is aten.addmm.default and node.kwargs.get("alpha", 1) == 1 == node.kwargs.get(
        "beta", 1
    ):
        bias, a, b = node.args
        if bias.meta["val"].dim() == 1:
            return bias, a, b
    return None


def _worth_rewriting(node: fx.Node) -> bool:
    operands = _operands(node) if node.op == "call_function" else None
    out = node.meta.get("val")
    if operands is None or out.device.type != "cpu" or out.dtype != torch.float32:
        return False  # mm and addmm take operands of their output's dtype
    _, a, b = operands
    rows, inner = a.meta["val"].shape
    return rows * inner * b.meta["val"].shape[1] >= MIN_MULTIPLY_ADDS


class OneDnnMatmuls(CustomGraphPass):
    """Post-grad pass: large float32 CPU `mm` / `addmm` nodes become `ebmlab::onednn_addmm`."""

    def __call__(self, graph: fx.Graph) -> None:
        for node in list(graph.nodes):
            if not _worth_rewriting(node):
                continue
            with graph.inserting_before(node):
                product = graph.call_function(
                    torch.ops.ebmlab.onednn_addmm.default, _operands(node)
                )
            product.meta.update(node.meta)
            node.replace_all_uses_with(product)
            graph.erase_node(node)

    def uuid(self) -> str:
        """Keys inductor's graph cache: changes whenever this module's code does."""
        return hashlib.sha256(inspect.getsource(inspect.getmodule(self)).encode()).hexdigest()


def compile_options() -> dict:
    """Options for `torch.compile` that route large CPU products from MKL to oneDNN."""
    return {"post_grad_custom_post_pass": OneDnnMatmuls()} if onednn_can_replace_mkl() else {}
