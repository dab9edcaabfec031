"""The decoder registry: what each choice of p(x | z) means, in one place.

A decoder network outputs logits ``l`` of the shape of one example; a
:class:`Decoder` entry says everything the rest of the code needs to know
about the distribution those logits parameterise:

- ``log_likelihood(x, logits, sigma2=None)``: log p(x | z) of ONE example in
  nats, summed over its dimensions (the per-example functions of
  :mod:`vae_jax.likelihoods`);
- ``mean(logits)``: E[x | z], the image to show;
- ``density``: False for a probability mass on binary data, True for a density
  on [0, 1]^D (or R^D); this decides when a negative log-likelihood is a
  number of bits of the data (:func:`bits_per_dim_offset`);
- ``uses_sigma2``: whether a variance enters (the Gaussian), and so whether
  the sigma^2 modes apply.

Models, training, evaluation, config checks and sweeps all read
:data:`DECODERS`; adding a decoder is one entry here plus its tests.
"""

from collections.abc import Callable
import dataclasses
import math

import jax
import jax.numpy as jnp

from vae_jax import likelihoods

Array = jax.Array

# How a Gaussian decoder's sigma^2 is set: a number from the config, one
# learned scalar, one learned value per data dimension, or the sigma-VAE's
# closed-form optimum (Rybkin et al., 2021).
SIGMA2_MODES = ("fixed", "learned", "per_pixel", "optimal")


@dataclasses.dataclass(frozen=True)
class Decoder:
  """One choice of p(x | z), parameterised by the decoder's logits.

  Attributes:
    name: the config's ``likelihood`` value.
    log_likelihood: ``(x [...], logits [...], sigma2=None) -> scalar`` nats.
    mean: ``logits [...] -> E[x | z] [...]`` in [0, 1].
    density: True for a density (continuous data), False for a mass on
      binary data.
    uses_sigma2: whether ``log_likelihood`` needs ``sigma2`` (scalar or
      broadcastable to ``x``).
    reference: where the form comes from.
  """

  name: str
  log_likelihood: Callable[..., Array]
  mean: Callable[[Array], Array]
  density: bool
  uses_sigma2: bool
  reference: str


def continuous_bernoulli_mean(logits: Array) -> Array:
  """Mean of CB(lambda = sigmoid(l)): ``1 / (1 - e^-l) - 1 / l``, 1/2 at 0."""
  small = jnp.abs(logits) < 1e-3
  safe = jnp.where(small, 1.0, logits)
  # Near 0 the two terms cancel; the series is 1/2 + l/12.
  return jnp.where(small, 0.5 + logits / 12, -1 / jnp.expm1(-safe) - 1 / safe)


def _bernoulli(x, logits, sigma2=None):
  del sigma2
  return likelihoods.bernoulli_log_likelihood(x, logits)


def _continuous_bernoulli(x, logits, sigma2=None):
  del sigma2
  return likelihoods.continuous_bernoulli_log_likelihood(x, logits)


def _gaussian(x, logits, sigma2=None):
  # The mean is sigmoid(logits): images live in [0, 1].
  return likelihoods.gaussian_log_likelihood(x, jax.nn.sigmoid(logits), sigma2)


DECODERS: dict[str, Decoder] = {
  d.name: d
  for d in (
    Decoder(
      "bernoulli",
      _bernoulli,
      jax.nn.sigmoid,
      density=False,
      uses_sigma2=False,
      reference="product of Bernoullis (minus the summed BCE)",
    ),
    Decoder(
      "continuous_bernoulli",
      _continuous_bernoulli,
      continuous_bernoulli_mean,
      density=True,
      uses_sigma2=False,
      reference="Loaiza-Ganem & Cunningham (2019)",
    ),
    Decoder(
      "gaussian",
      _gaussian,
      jax.nn.sigmoid,
      density=True,
      uses_sigma2=True,
      reference="isotropic or diagonal Gaussian, mean sigmoid(l)",
    ),
  )
}
NAMES = tuple(DECODERS)


def get(name: str) -> Decoder:
  """The registry entry for ``name``; ValueError naming the choices."""
  if name not in DECODERS:
    raise ValueError(f"likelihood must be one of {NAMES}, got {name!r}")
  return DECODERS[name]


def bits_per_dim_offset(
  name: str, *, binary_data: bool, levels: int
) -> float | None:
  """Nats per dimension to add to the NLL before converting it to bits/dim.

  A mass on binary data: 0. A density on dequantized data, x = (k + u) /
  levels: log(levels), which turns the density on [0, 1) into a bound on the
  discrete NLL (Theis et al., 2016). Other pairs (a density on binary data, a
  Bernoulli on grey levels) are not normalised likelihoods of the data:
  None, and no bits/dim is reported.
  """
  if get(name).density:
    return None if binary_data else math.log(levels)
  return 0.0 if binary_data else None
