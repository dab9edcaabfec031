"""The decoder registry: what each choice of p(x | z) means, in one place.

:data:`DECODERS` is the one table from a likelihood's name to its meaning:
the training stack's models, config checks, evaluation and sweeps read it,
and so does :func:`vae_jax.negative_elbo` (``likelihood="<name>"``). A
:class:`Decoder` entry says everything the rest of the code needs to know
about the distribution a decoder network's output parameterises:

- ``output``: what that output is: one logit per data dimension (of the
  probability, or of the mean), or, for the discretised logistics, several
  numbers per dimension on a trailing axis (``output_shape``);
- ``log_likelihood(x, output, sigma2=None, *, levels=256)``: log p(x | z) of
  ONE example in nats, summed over its dimensions (the per-example functions
  of :mod:`vae_jax.likelihoods`); ``levels`` is the data's number of grey
  levels, read by the masses on levels only;
- ``mean(output, *, levels=256)``: E[x | z], the image to show;
- ``support``: what the likelihood is a normalised one of: ``"binary"`` (a
  mass on {0, 1}^D), ``"levels"`` (a mass on the grid k / (levels - 1)) or
  ``"density"`` (on [0, 1]^D or R^D); this decides when a negative
  log-likelihood is a number of bits of the data (:func:`bits_per_dim_offset`);
- ``sigma2_modes``: how its scale parameter may be set (:data:`SIGMA2_MODES`;
  empty where none enters). For the Gaussian that parameter is the variance
  sigma^2, for the Laplace its scale b: both travel as ``sigma2``.

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

# How a decoder's scale (the Gaussian's sigma^2, the Laplace's b) is set: a
# number from the config, one learned scalar, one learned value per data
# dimension, or the sigma-VAE's closed-form optimum (Rybkin et al., 2021; the
# Gaussian's only: see each entry's ``sigma2_modes``).
SIGMA2_MODES = ("fixed", "learned", "per_pixel", "optimal")


# What a likelihood is a normalised one of, and what data a protocol feeds it
# (see :func:`bits_per_dim_offset`).
SUPPORTS = ("binary", "levels", "density")
DATA_KINDS = ("binary", "levels", "dequantized")


@dataclasses.dataclass(frozen=True)
class Decoder:
  """One choice of p(x | z), parameterised by the decoder network's output.

  Attributes:
    name: the config's ``likelihood`` value.
    output: what ``log_likelihood`` and ``mean`` take from the decoder.
    log_likelihood: ``(x [...], output, sigma2=None, *, levels=256) ->
      scalar`` nats; ``output`` is ``[...]`` or ``[..., channels]``
      (:meth:`output_shape`).
    mean: ``(output, *, levels=256) -> E[x | z] [...]`` in [0, 1].
    support: one of :data:`SUPPORTS`.
    sigma2_modes: the :data:`SIGMA2_MODES` its scale may take; ``()`` where
      ``log_likelihood`` takes no ``sigma2``.
    reference: where the form comes from.
    channels_per_dim: decoder outputs per data dimension (per mixture
      component where ``per_component``); 1: the output has the data's shape.
    per_component: whether ``channels_per_dim`` is per component of a
      mixture (the config's ``mixture_components``).
  """

  name: str
  output: str
  log_likelihood: Callable[..., Array]
  mean: Callable[..., Array]
  support: str
  sigma2_modes: tuple[str, ...]
  reference: str
  channels_per_dim: int = 1
  per_component: bool = False

  @property
  def uses_sigma2(self) -> bool:
    """Whether ``log_likelihood`` needs ``sigma2`` (scalar or broadcastable
    to ``x``): the Gaussian's variance, the Laplace's scale b."""
    return bool(self.sigma2_modes)

  @property
  def density(self) -> bool:
    """True for a density (continuous data), False for a mass."""
    return self.support == "density"

  def output_shape(
    self, data_shape: tuple[int, ...], components: int = 1
  ) -> tuple[int, ...]:
    """The shape of one example's decoder output: ``data_shape``, or
    ``data_shape`` plus a trailing axis of ``channels_per_dim`` (times
    ``components`` for a mixture)."""
    if self.channels_per_dim == 1 and not self.per_component:
      return tuple(data_shape)
    width = self.channels_per_dim * (components if self.per_component else 1)
    return (*data_shape, width)


def continuous_bernoulli_mean(logits: Array) -> Array:
  """Mean of CB(lambda = sigmoid(l)): ``1 / (1 - e^-l) - 1 / l``, 1/2 at 0."""
  small = jnp.abs(logits) < 1e-3
  safe = jnp.where(small, 1.0, logits)
  # Near 0 the two terms cancel; the series is 1/2 + l/12.
  return jnp.where(small, 0.5 + logits / 12, -1 / jnp.expm1(-safe) - 1 / safe)


def _bernoulli(x, logits, sigma2=None, *, levels=256):
  del sigma2, levels
  return likelihoods.bernoulli_log_likelihood(x, logits)


def _continuous_bernoulli(x, logits, sigma2=None, *, levels=256):
  del sigma2, levels
  return likelihoods.continuous_bernoulli_log_likelihood(x, logits)


def _gaussian(x, logits, sigma2=None, *, levels=256):
  del levels
  # The mean is sigmoid(logits): images live in [0, 1].
  return likelihoods.gaussian_log_likelihood(x, jax.nn.sigmoid(logits), sigma2)


def _laplace(x, logits, sigma2=None, *, levels=256):
  del levels
  # ``sigma2`` carries the scale b (the config's key), the location sigmoid(l).
  return likelihoods.laplace_log_likelihood(x, jax.nn.sigmoid(logits), sigma2)


def _sigmoid(logits, *, levels=256):
  del levels
  return jax.nn.sigmoid(logits)


def _continuous_bernoulli_image(logits, *, levels=256):
  del levels
  return continuous_bernoulli_mean(logits)


# PixelCNN++'s floor of log s, -7, is on data in [-1, 1], twice ours: the same
# floor here is -7 - log 2. It bounds how peaked a bin may get; the edge bins,
# open to +-inf, are not limited by it.
MIN_LOG_SCALE = -7.0 - math.log(2.0)


def _log_scale(raw: Array) -> Array:
  return jnp.maximum(raw, MIN_LOG_SCALE)


def _discretized_logistic(x, output, sigma2=None, *, levels=256):
  del sigma2
  return likelihoods.discretized_logistic_log_likelihood(
    x, output[..., 0], _log_scale(output[..., 1]), levels=levels
  )


def _mixture_parts(output):
  weights, means, log_scales = jnp.split(output, 3, axis=-1)
  return weights, means, _log_scale(log_scales)


def _discretized_logistic_mixture(x, output, sigma2=None, *, levels=256):
  del sigma2
  return likelihoods.discretized_logistic_mixture_log_likelihood(
    x, *_mixture_parts(output), levels=levels
  )


def discretized_logistic_mean(
  mean: Array, log_scale: Array, *, levels: int = 256
) -> Array:
  """E[x] of a logistic(mean, exp(log_scale)) binned to ``levels`` levels.

  With x_k = k / n (n = levels - 1) and the edge bins open,
  E[x] = (1/n) sum_{k=1}^{n} P(x >= x_k)
       = (1/n) sum_{k=1}^{n} sigmoid((mean - (k - 1/2) / n) / s),
  in [0, 1] for any location. A loop over the n edges keeps the memory that
  of ``mean``.

  Args:
    mean: locations, any shape.
    log_scale: log s, broadcastable to ``mean``.
    levels: the number of levels (a Python int).

  Returns:
    E[x], the shape of ``mean``.
  """
  n = levels - 1
  inv_scale = jnp.exp(-log_scale)

  def add(k, total):
    return total + jax.nn.sigmoid((mean - (k - 0.5) / n) * inv_scale)

  zero = jnp.zeros(jnp.broadcast_shapes(mean.shape, inv_scale.shape))
  return jax.lax.fori_loop(1, levels, add, zero) / n


def _discretized_logistic_image(output, *, levels=256):
  return discretized_logistic_mean(
    output[..., 0], _log_scale(output[..., 1]), levels=levels
  )


def _mixture_image(output, *, levels=256):
  weights, means, log_scales = _mixture_parts(output)
  each = discretized_logistic_mean(means, log_scales, levels=levels)
  return jnp.sum(jax.nn.softmax(weights, axis=-1) * each, axis=-1)


DECODERS: dict[str, Decoder] = {
  d.name: d
  for d in (
    Decoder(
      "bernoulli",
      "logits l: p(x_d = 1) = sigmoid(l_d)",
      _bernoulli,
      _sigmoid,
      support="binary",
      sigma2_modes=(),
      reference="product of Bernoullis (minus the summed BCE)",
    ),
    Decoder(
      "continuous_bernoulli",
      "logits l: lambda_d = sigmoid(l_d)",
      _continuous_bernoulli,
      _continuous_bernoulli_image,
      support="density",
      sigma2_modes=(),
      reference="Loaiza-Ganem & Cunningham (2019)",
    ),
    Decoder(
      "gaussian",
      "logits l of the mean: mu_d = sigmoid(l_d); sigma2 the variance",
      _gaussian,
      _sigmoid,
      support="density",
      sigma2_modes=SIGMA2_MODES,
      reference="isotropic or diagonal Gaussian, mean sigmoid(l)",
    ),
    Decoder(
      "laplace",
      "logits l of the location: m_d = sigmoid(l_d); sigma2 the scale b "
      "(fixed, learned or per pixel; no closed-form 'optimal')",
      _laplace,
      _sigmoid,
      support="density",
      sigma2_modes=("fixed", "learned", "per_pixel"),
      reference="Laplace, the likelihood behind the L1 loss",
    ),
    Decoder(
      "discretized_logistic",
      "[..., 2] per data dimension: [..., 0] the location m in data units "
      "(identity, unbounded, as PixelCNN++), [..., 1] log s, floored at "
      "MIN_LOG_SCALE",
      _discretized_logistic,
      _discretized_logistic_image,
      support="levels",
      sigma2_modes=(),
      reference="Salimans et al. (2017), PixelCNN++, one component",
      channels_per_dim=2,
    ),
    Decoder(
      "discretized_logistic_mixture",
      "[..., 3n] per data dimension for n components: [..., :n] the weights' "
      "logits, [..., n:2n] the locations (identity), [..., 2n:] the log "
      "scales, floored at MIN_LOG_SCALE",
      _discretized_logistic_mixture,
      _mixture_image,
      support="levels",
      sigma2_modes=(),
      reference="Salimans et al. (2017), PixelCNN++ (no channel coupling); "
      "the decoder of NVAE and VDVAE",
      channels_per_dim=3,
      per_component=True,
    ),
  )
}
NAMES = tuple(DECODERS)


def get(name: str) -> Decoder:
  """The registry entry for ``name``; ValueError naming the choices."""
  if name not in DECODERS:
    raise ValueError(f"likelihood must be one of {NAMES}, got {name!r}")
  return DECODERS[name]


def bits_per_dim_offset(name: str, *, data: str, levels: int) -> float | None:
  """Nats per dimension to add to the NLL before converting it to bits/dim.

  ``data`` is what the likelihood sees: ``"binary"`` values, the grey
  ``"levels"`` k / (levels - 1) themselves, or ``"dequantized"`` levels,
  x = (k + u) / levels. A mass on what it sees (a Bernoulli on binary data,
  a discretised logistic on the levels): 0, its NLL is exact. A density on
  dequantized data: log(levels), which turns the density on [0, 1) into a
  bound on the discrete NLL (Theis et al., 2016). Other pairs (a density on
  binary data, a Bernoulli on grey levels) are not normalised likelihoods of
  the data: None, and no bits/dim is reported.
  """
  if data not in DATA_KINDS:
    raise ValueError(f"data must be one of {DATA_KINDS}, got {data!r}")
  support = get(name).support
  if support == "density":
    return math.log(levels) if data == "dequantized" else None
  return 0.0 if data == support else None
