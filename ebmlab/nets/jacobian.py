"""A generator's Jacobian J_z = dG/dz without forming it: products, smallest singular value.

Everything is per sample and batched: a generator maps each row of z (B, d) on its own (put
BatchNorm in eval mode first), so one forward-mode product with tangents v (B, d) gives every
J_{z_i} v_i, and one reverse-mode product every u_i J_{z_i}. Outputs are flattened to (B, D).
Products keep their graph, so losses built on them train the generator (and reach z).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Generator = Callable[[Tensor], Tensor]


def jvp(generator: Generator, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(G(z), J_z v), both flattened to (B, D), by forward-mode AD (torch.func.jvp)."""
    out, tangent = torch.func.jvp(generator, (z,), (v,))
    return out.flatten(1), tangent.flatten(1)


def vjp(generator: Generator, z: Tensor, u: Tensor) -> Tensor:
    """u J_z (B, d) for cotangents u (B, D), by reverse-mode AD."""
    out, pullback = torch.func.vjp(generator, z)
    return pullback(u.view_as(out))[0]


def jacobian(generator: Generator, z: Tensor) -> Tensor:
    """The full Jacobians (B, D, d), one forward-mode product per latent dimension: for small d
    (the 2D toys), where the exact singular values and log-determinant are affordable."""
    columns = [jvp(generator, z, basis.expand_as(z))[1] for basis in torch.eye(z.shape[1]).to(z)]
    return torch.stack(columns, dim=-1)


def smallest_singular_value(
    generator: Generator,
    z: Tensor,
    iters: int,
    rng: torch.Generator | None = None,
) -> Tensor:
    """s_1(J_z) per sample (B,), by a Rayleigh-Ritz iteration on J^T J (LOBPCG with block 1).

    Each iteration takes the current vector v, its residual r = J^T J v - |J v|^2 v and the last
    search direction p, orthonormalises [v, r, p] (QR), and keeps the combination that
    minimises |J V c| over unit c (the smallest eigenvector of the 3x3 Ritz matrix): three
    Jacobian-vector products and one vector-Jacobian product per iteration, no Jacobian.

    The search runs without gradient; the value returned, s_1 = |J_z v| at the final unit
    vector v, carries the graph to z and the generator's parameters. At an exact singular
    vector that is the gradient of s_1 itself (to first order, moving v does not change a
    stationary Rayleigh quotient).
    """
    with torch.no_grad():
        v = _unit(torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype))
        search = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
        for _ in range(iters if z.shape[1] > 1 else 0):
            v, search = _rayleigh_ritz_step(generator, z, v, search)
    return jvp(generator, z, v)[1].norm(dim=1)


def _rayleigh_ritz_step(
    generator: Generator, z: Tensor, v: Tensor, search: Tensor
) -> tuple[Tensor, Tensor]:
    jv = jvp(generator, z, v)[1]
    residual = vjp(generator, z, jv) - jv.pow(2).sum(1, keepdim=True) * v
    columns = [v, _unit(residual), _unit(search)][: z.shape[1]]
    basis = torch.linalg.qr(torch.stack(columns, dim=-1)).Q  # (B, d, k), orthonormal columns
    images = torch.stack([jvp(generator, z, basis[..., k])[1] for k in range(basis.shape[-1])], -1)
    ritz = images.transpose(1, 2) @ images  # (B, k, k): V^T J^T J V
    coefficients = torch.linalg.eigh(ritz).eigenvectors[..., 0]  # smallest eigenvalue's
    new_v = _unit((basis @ coefficients.unsqueeze(-1)).squeeze(-1))
    new_search = (basis[..., 1:] @ coefficients[:, 1:].unsqueeze(-1)).squeeze(-1)
    return new_v, new_search


def _unit(rows: Tensor) -> Tensor:
    """Rows scaled to unit length (a zero row stays zero)."""
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
