"""Networks shared by every method: energies, generators, Gaussian encoders, EMA."""

from ebmlab.nets.encoder import ConvEncoder, MLPEncoder, build_encoder, reparameterise
from ebmlab.nets.energy import (
    ConvEnergy,
    DCGANEnergy,
    MLPEnergy,
    MultiscaleEnergy,
    ResNetEnergy,
    SelfAttention,
    build_energy,
)
from ebmlab.nets.generator import (
    DCGANGenerator,
    MLPGenerator,
    ResNetGenerator,
    build_generator,
)
from ebmlab.nets.layers import EMA, apply_spectral_norm, eval_mode

__all__ = [
    "EMA",
    "ConvEncoder",
    "ConvEnergy",
    "DCGANEnergy",
    "DCGANGenerator",
    "MLPEncoder",
    "MLPEnergy",
    "MLPGenerator",
    "MultiscaleEnergy",
    "ResNetEnergy",
    "ResNetGenerator",
    "SelfAttention",
    "apply_spectral_norm",
    "build_encoder",
    "build_energy",
    "build_generator",
    "eval_mode",
    "reparameterise",
]
