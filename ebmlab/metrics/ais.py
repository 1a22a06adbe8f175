"""Annealed importance sampling (Neal, 2001): log Z of exp(-E), and a held-out log-likelihood.

Above two dimensions no grid can normalise exp(-E), so AIS moves chains from a base density
whose normaliser is known to exp(-E). The base is N(0, s^2 I) (model units are standardised,
so s = 1 fits), with energy E_0(x) = |x|^2 / (2 s^2) and log Z_0 = D/2 log(2 pi s^2). The
chains pass through the geometric path of intermediate energies

    f_k(x) = (1 - beta_k) E_0(x) + beta_k E(x),    0 = beta_0 < beta_1 < ... < beta_K = 1,

on a sigmoid schedule (Wu et al., 2017: dense at both ends, where the energies change fastest).
Each chain starts at x_0 ~ N(0, s^2 I) and carries the log weight

    log w = sum_{k=1..K} (beta_{k-1} - beta_k) (E(x_{k-1}) - E_0(x_{k-1})),

where x_k comes from x_{k-1} by a transition that leaves exp(-f_k) invariant: ebmlab's own HMC
or MALA (`ebmlab.samplers`), both Metropolis-corrected and so exact at any step size. Then
E[w] = Z / Z_0, and over N independent chains

    log Z ~= log Z_0 + log mean(w)   (computed as a log-mean-exp, in float64).

Its standard error is the delta method's: with normalised weights w~ = w / mean(w),
SE(log Z) = std(w~) / sqrt(N). Heavy-tailed weights (a mode the chains never reach) make both
the estimate low and its SE optimistic; `ess` (the effective number of chains,
(sum w)^2 / sum w^2) shows when that happens. log mean(w) is biased low (Jensen) by about
SE^2 / 2, so a small SE also means a small bias.

The step size is adapted between temperatures toward a target acceptance (0.65 for HMC, 0.57
for MALA) from the acceptance of all the chains at the previous temperature. That couples the
chains weakly (an O(1/N) effect on the estimate), as in the AIS code of Salakhutdinov & Murray
(2008) and Wu et al. (2017); each transition is still exact for its f_k.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ebmlab.errors import EbmlabError
from ebmlab.metrics._common import batched_energy, model_device, model_dtype
from ebmlab.samplers import HMC, MALA, frozen_params

Energy = Callable[[Tensor], Tensor]

#: acceptance the step size is steered to: near the optimum of each sampler's efficiency
TARGET_ACCEPT = {"hmc": 0.65, "mala": 0.57}
#: how fast the step follows the acceptance: a factor exp(ADAPT_RATE * (rate - target)) per
#: temperature, so a few dozen temperatures can move it by orders of magnitude
ADAPT_RATE = 1.0
#: steepness of the sigmoid schedule
SCHEDULE_STEEPNESS = 4.0


@dataclass(frozen=True)
class AISResult:
    """log Z of exp(-E) by AIS, with its standard error and diagnostics.

    Attributes:
        log_z: log of the normalising constant of exp(-E), nats.
        log_z_se: its standard error by the delta method (see the module docstring).
        log_weights: each chain's log weight log(w), float64 on the CPU, (chains,).
        ess: effective number of chains, (sum w)^2 / sum w^2, between 1 and `chains`.
        accept_rate: the transitions' mean acceptance over all temperatures.
        step_size: the adapted step size at the last temperature.
    """

    log_z: float
    log_z_se: float
    log_weights: Tensor
    ess: float
    accept_rate: float
    step_size: float


def sigmoid_schedule(temperatures: int) -> Tensor:
    """beta_0 = 0 < ... < beta_K = 1 (K = `temperatures`), float64: a rescaled sigmoid."""
    if temperatures < 1:
        raise EbmlabError(f"AIS needs at least one temperature, got {temperatures}")
    t = torch.linspace(-SCHEDULE_STEEPNESS, SCHEDULE_STEEPNESS, temperatures + 1).double()
    s = torch.sigmoid(t)
    return (s - s[0]) / (s[-1] - s[0])


def ais_log_z(
    energy: Energy,
    shape: tuple[int, ...],
    *,
    chains: int = 512,
    temperatures: int = 1000,
    base_scale: float = 1.0,
    transition: Literal["hmc", "mala"] = "mala",
    leapfrog_steps: int = 5,
    step_size: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> AISResult:
    """log Z = log of the integral of exp(-E(x)) over x, by AIS from N(0, base_scale^2 I).

    Runs on the energy's parameter device (else the CPU), in the parameters' dtype, with the
    weights accumulated in float64. The parameters are frozen while it runs (no parameter
    gradients are computed) and left as they were. Cost: `temperatures` transitions of
    `chains` chains, each `leapfrog_steps` + 1 gradients of E for HMC (2 for MALA), all
    chains in one batch.

    Args:
        energy: x (B, *shape) -> (B,), lower = more likely; e.g. a `Method`'s `energy`.
        shape: the shape of one example, e.g. (16,).
        chains: independent AIS chains; the SE shrinks as 1 / sqrt(chains).
        temperatures: K, the number of intermediate energies, beta_K = 1 included.
        base_scale: s, the base's standard deviation per coordinate.
        transition: "hmc" (`ebmlab.samplers.HMC`, one transition per temperature) or
            "mala" (`ebmlab.samplers.MALA`, one step per temperature).
        leapfrog_steps: HMC's leapfrog steps per transition.
        step_size: the first temperature's step size (then adapted); default one that suits
            the base: 0.5 s D^(-1/4) for HMC, 0.5 s^2 D^(-1/3) for MALA.
        seed: seeds the base draws and the transitions (a `torch.Generator`; the caller's
            random state is untouched).
        progress: show a progress bar over the temperatures.

    Returns:
        An `AISResult`.

    Raises:
        EbmlabError: for fewer than 2 chains, no temperature, a non-positive base scale or
            step size, or an unknown transition.
    """
    dim = math.prod(shape)
    _check_options(chains, base_scale, transition, step_size)
    device = model_device(energy) or torch.device("cpu")
    dtype = model_dtype(energy)
    generator = torch.Generator(device=device).manual_seed(seed)
    betas = sigmoid_schedule(temperatures)
    eps = step_size or _default_step(transition, base_scale, dim)

    def base_energy(x: Tensor) -> Tensor:
        return x.flatten(1).pow(2).sum(1) / (2 * base_scale**2)

    x = base_scale * torch.randn(chains, *shape, generator=generator, device=device, dtype=dtype)
    log_w = torch.zeros(chains, dtype=torch.float64, device=device)
    accepted = 0.0
    bar = tqdm(total=temperatures, desc="AIS", disable=not progress, leave=False)
    with _frozen(energy), bar:
        for k in range(1, temperatures + 1):
            with torch.no_grad():
                gap = energy(x).double() - base_energy(x.double())
            log_w -= (betas[k] - betas[k - 1]) * gap
            bar.update(1)
            if k == temperatures:
                break  # the weights are complete; a transition at beta = 1 would change none
            beta = float(betas[k])

            def intermediate(y: Tensor, beta: float = beta) -> Tensor:
                return (1 - beta) * base_energy(y) + beta * energy(y)

            sampler = _transition(transition, eps, leapfrog_steps)
            x, info = sampler(intermediate, x, generator=generator)
            rate = float(info["accept_rate"])  # the next step size is a host number
            accepted += rate
            eps *= math.exp(ADAPT_RATE * (rate - TARGET_ACCEPT[transition]))
    log_w = log_w.cpu()
    log_z_ratio, log_z_se, ess = _log_mean_exp_with_se(log_w)
    log_z0 = 0.5 * dim * math.log(2 * math.pi * base_scale**2)
    return AISResult(
        log_z=log_z0 + log_z_ratio,
        log_z_se=log_z_se,
        log_weights=log_w,
        ess=ess,
        accept_rate=accepted / max(temperatures - 1, 1),
        step_size=eps,
    )


def ais_log_likelihood(energy: Energy, test: Tensor, **ais_options) -> dict[str, float]:
    """Held-out log-likelihood mean(-E(x_test)) - log Z per example, nats, with its SE.

    The two parts are independent, so their variances add:
    SE = sqrt(var(-E(x_test)) / n_test + SE(log Z)^2).

    Args:
        energy: x (B, *shape) -> (B,), as for `ais_log_z`.
        test: held-out examples (n_test, *shape), at least 2, in the energy's units.
        **ais_options: passed to `ais_log_z`.

    Returns:
        `loglik`, `loglik_se`, and the `log_z`, `log_z_se` and `ess` it used.
    """
    if len(test) < 2:
        raise EbmlabError(
            f"a held-out log-likelihood needs at least 2 test examples, got {len(test)}"
        )
    result = ais_log_z(energy, tuple(test.shape[1:]), **ais_options)
    neg_energy = -batched_energy(energy, test).double()
    loglik = float(neg_energy.mean()) - result.log_z
    test_var = float(neg_energy.var()) / len(test)
    return {
        "loglik": loglik,
        "loglik_se": math.sqrt(test_var + result.log_z_se**2),
        "log_z": result.log_z,
        "log_z_se": result.log_z_se,
        "ess": result.ess,
    }


def _log_mean_exp_with_se(log_w: Tensor) -> tuple[float, float, float]:
    """log mean(w), its delta-method SE std(w / mean w) / sqrt(N), and (sum w)^2 / sum w^2."""
    n = len(log_w)
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    normalised = torch.exp(log_w - log_mean)  # mean 1 by construction
    se = float(normalised.std()) / math.sqrt(n)
    ess = float(normalised.sum() ** 2 / normalised.pow(2).sum())
    return float(log_mean), se, ess


def _default_step(transition: str, base_scale: float, dim: int) -> float:
    """A first step that suits N(0, s^2 I) in `dim` dimensions; adaptation takes it on."""
    if transition == "hmc":
        return 0.5 * base_scale * dim ** (-0.25)
    return 0.5 * base_scale**2 * dim ** (-1 / 3)


def _transition(name: str, step_size: float, leapfrog_steps: int) -> HMC | MALA:
    if name == "hmc":
        return HMC(steps=1, step_size=step_size, leapfrog_steps=leapfrog_steps)
    return MALA(steps=1, step_size=step_size)


def _check_options(
    chains: int, base_scale: float, transition: str, step_size: float | None
) -> None:
    if chains < 2:
        raise EbmlabError(f"AIS needs at least 2 chains for a standard error, got {chains}")
    if not base_scale > 0:
        raise EbmlabError(f"the AIS base scale must be positive, got {base_scale}")
    if transition not in TARGET_ACCEPT:
        raise EbmlabError(
            f"unknown AIS transition {transition!r}; use one of {sorted(TARGET_ACCEPT)}"
        )
    if step_size is not None and not step_size > 0:
        raise EbmlabError(f"the AIS step size must be positive, got {step_size}")


def _frozen(energy: Energy) -> contextlib.AbstractContextManager:
    """Freeze the parameters of the module behind `energy` (a module or its bound method)."""
    owner = getattr(energy, "__self__", energy)
    return frozen_params(owner) if isinstance(owner, nn.Module) else contextlib.nullcontext()
