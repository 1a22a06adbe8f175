"""The oneDNN route for the matrix products of compiled CPU steps (samplers/cpu_matmul.py)."""

import os
import subprocess
import sys

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ebmlab.samplers import Langevin, frozen_params
from ebmlab.samplers.cpu_matmul import (
    MIN_MULTIPLY_ADDS,
    OneDnnMatmuls,
    compile_options,
    onednn_addmm,
    onednn_can_replace_mkl,
)

pytestmark = pytest.mark.skipif(
    not onednn_can_replace_mkl(), reason="a torch build without MKL or oneDNN"
)


def layouts(a, b):
    """Row-major operands, each of them as the transpose of a contiguous tensor, and a row
    repeated by a zero stride."""
    return {
        "contiguous": (a, b),
        "a transposed": (a.t().contiguous().t(), b),
        "b transposed": (a, b.t().contiguous().t()),
        "a broadcast": (a[:1].expand_as(a), b),  # stride 0, as autograd's ones for a sum
    }


@pytest.mark.parametrize("layout", ["contiguous", "a transposed", "b transposed", "a broadcast"])
def test_the_op_computes_mm_and_addmm(layout):
    a, b, bias = torch.randn(300, 40), torch.randn(40, 70), torch.randn(70)
    a, b = layouts(a, b)[layout]
    torch.testing.assert_close(onednn_addmm(None, a, b), a @ b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        onednn_addmm(bias, a, b), torch.addmm(bias, a, b), rtol=1e-5, atol=1e-5
    )


THRESHOLD = 2**23  # multiply-adds: measured, see cpu_matmul.MIN_MULTIPLY_ADDS


def products(a, b, bias, wide):
    """a: (THRESHOLD / 2048, 32) and b: (32, 64), so a @ b is exactly at the threshold."""
    below, above = a[1:], torch.cat([a, a])
    return (
        torch.mm(a, b),  # rewritten: at the threshold
        torch.mm(above, b),  # rewritten: above it
        torch.addmm(bias, a, b),  # rewritten
        torch.mm(below, b),  # kept: one row under the threshold
        torch.mm(a, wide),  # rewritten: the count is rows x inner x columns of b
        torch.addmm(bias, a, b, alpha=2.0),  # kept: oneDNN's inner product has no alpha
        torch.addmm(bias, a, b, alpha=0.5),  # kept
        torch.addmm(bias, a, b, beta=2.0),  # kept: nor a beta
        torch.addmm(bias, a, b, beta=0.5),  # kept
        torch.addmm(bias, a, b, alpha=1.0, beta=1.0),  # rewritten: the default, as floats
        torch.addmm(bias.expand(len(a), -1), a, b),  # kept: a 2-D bias
        torch.addmm(bias[0], a, b),  # kept: a 0-D bias
        torch.mm(a.double(), b.double()),  # kept: float64
    )


def test_the_pass_rewrites_large_float32_products_and_keeps_the_rest():
    inputs = (
        torch.randn(THRESHOLD // (32 * 64), 32),
        torch.randn(32, 64),
        torch.randn(64),
        torch.randn(32, 128),
    )
    assert MIN_MULTIPLY_ADDS == THRESHOLD
    expected = products(*inputs)
    traced = make_fx(products, tracing_mode="fake")(*inputs)
    OneDnnMatmuls()(traced.graph)
    traced.recompile()
    targets = [node.target for node in traced.graph.nodes if node.op == "call_function"]
    assert targets.count(torch.ops.ebmlab.onednn_addmm.default) == 5
    assert targets.count(torch.ops.aten.mm.default) == 2
    assert targets.count(torch.ops.aten.addmm.default) == 6
    for got, want in zip(traced(*inputs), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_the_op_traces_with_its_output_shape_and_compile_takes_the_pass():
    """Fake tensors (how inductor traces) see (rows of a, columns of b); on this build the
    compile options carry the pass."""
    traced = make_fx(lambda a, b: onednn_addmm(None, a, b), tracing_mode="fake")(
        torch.randn(5, 3), torch.randn(3, 7)
    )
    (op,) = [n for n in traced.graph.nodes if n.op == "call_function"]
    assert tuple(op.meta["val"].shape) == (5, 7)
    assert isinstance(compile_options()["post_grad_custom_post_pass"], OneDnnMatmuls)


@pytest.mark.slow
def test_compiled_langevin_runs_large_products_through_onednn_and_follows_eager():
    """2,048 chains through 64 x 64 layers: 2^23 multiply-adds per product, so the compiled
    step's code calls the op, and its chains equal the eager ones up to float rounding."""
    from torch._inductor.utils import run_and_get_code

    from ebmlab.nets import build_energy

    net = build_energy((2,), kind="mlp", hidden=64, depth=2, activation="swish")
    start = torch.randn(2048, 2)
    chains = {}
    with frozen_params(net), torch._inductor.config.patch(fx_graph_cache=False):
        for compiled in (False, True):
            sampler = Langevin(steps=10, step_size=0.05, compile=compiled)
            generator = torch.Generator().manual_seed(3)
            (chains[compiled], _), code = run_and_get_code(sampler, net, start, generator=generator)
    assert "ebmlab.onednn_addmm" in "\n".join(code)
    assert not torch.equal(chains[False], start)
    torch.testing.assert_close(chains[True], chains[False], atol=1e-5, rtol=1e-5)


CACHED_RUN = """
import torch
from torch._dynamo.utils import counters
from ebmlab.nets import build_energy
from ebmlab.samplers import Langevin, frozen_params
torch.manual_seed(0)
net = build_energy((2,), kind="mlp", hidden=64, depth=2, activation="swish")
with frozen_params(net):
    chains, _ = Langevin(steps=3, step_size=0.05, compile=True)(net, torch.randn(2048, 2))
print(counters["inductor"]["fxgraph_cache_hit"], chains.double().sum().item())
"""


@pytest.mark.slow
def test_a_compiled_step_read_back_from_inductors_cache_finds_the_op(tmp_path):
    """A second process loads the compiled step from inductor's on-disk cache, where the pass
    does not run: the op must be registered all the same (it once was not)."""
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
    }
    runs = [
        subprocess.run(
            [sys.executable, "-c", CACHED_RUN], env=env, capture_output=True, text=True, timeout=300
        )
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[1].stderr[-2000:]
    (first_hits, first), (hits, second) = (run.stdout.split() for run in runs)
    assert int(first_hits) == 0 and int(hits) >= 1
    assert first == second


@pytest.mark.parametrize(
    "missing",
    ["torch.backends.mkl.is_available", "torch.backends.mkldnn.is_available"],
)
def test_the_pass_needs_mkl_and_onednn_both(missing, monkeypatch):
    monkeypatch.setattr(missing, lambda: False)
    assert not onednn_can_replace_mkl()
