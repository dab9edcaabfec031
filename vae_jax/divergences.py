"""Latent densities and KL divergences for a diagonal Gaussian posterior, in nats.

Per example: ``z``, ``mean`` and ``log_variance`` have one shape ``[...]``
(usually ``[latent_dim]``); results are scalars summed over latent dimensions.
"""

import math

import jax
import jax.numpy as jnp

from vae_jax import checks
from vae_jax.reductions import sum_over_data

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


def _posterior(mean, log_variance):
  mean = checks.float_array("mean", mean)
  log_variance = checks.float_array("log_variance", log_variance)
  checks.same_shape(("mean", mean), ("log_variance", log_variance))
  checks.not_nan("mean", mean)
  checks.not_nan("log_variance", log_variance)
  return mean, log_variance


def _sample(z, mean):
  z = checks.float_array("z", z)
  checks.same_shape(("mean", mean), ("z", z))
  checks.not_nan("z", z)
  return z


# exp(v) - 1 - v = v^2 sum_k v^k / (k + 2)!; 13 terms are exact to 2e-16
# for |v| < 1/2, where even expm1(v) - v loses digits to cancellation.
_EXPM1_MINUS_V_SERIES = tuple(1 / math.factorial(k + 2) for k in range(13))[
  ::-1
]


def _expm1_minus_identity(v: Array) -> Array:
  small = jnp.abs(v) < 0.5
  v_small = jnp.where(small, v, 0)
  series = jnp.square(v_small) * jnp.polyval(
    jnp.asarray(_EXPM1_MINUS_V_SERIES, v.dtype), v_small
  )
  # At v = +inf, expm1(v) - v is inf - inf; the limit of value and slope is
  # +inf, which exp gives. Double where: no 0 * inf in either gradient.
  infinite = v == jnp.inf
  v_finite = jnp.where(infinite, 0, v)
  limit = jnp.exp(jnp.where(infinite, v, 0))
  large = jnp.where(infinite, limit, jnp.expm1(v_finite) - v_finite)
  return jnp.where(small, series, large)


def kl_standard_normal_per_dim(mean: Array, log_variance: Array) -> Array:
  """Elementwise KL(N(m, exp(v)) || N(0, 1)) = (1/2)(exp(v) - 1 - v + m^2).

  exp(v) - 1 - v is computed without cancellation near v = 0 (a series
  there, ``expm1(v) - v`` elsewhere), so nearly inactive units keep their
  small KL to full relative precision. At v = +-inf it is the limit, +inf.

  Args:
    mean: posterior means, any shape.
    log_variance: posterior log-variances v, same shape.

  Returns:
    KL per latent dimension, same shape, in nats (>= 0). Used for free bits
    and for counting active units.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> mean, log_variance = jnp.array([0.0, 1.0]), jnp.zeros(2)
    >>> kl = vae_jax.kl_standard_normal_per_dim(mean, log_variance)
    >>> [round(float(k), 4) for k in kl]
    [0.0, 0.5]
  """
  mean, log_variance = _posterior(mean, log_variance)
  return 0.5 * (_expm1_minus_identity(log_variance) + jnp.square(mean))


def kl_standard_normal(mean: Array, log_variance: Array) -> Array:
  """Closed-form KL(N(m, diag(exp(v))) || N(0, I)), summed over latent dims.

  KL = (1/2) sum_j [exp(v_j) + m_j^2 - 1 - v_j].

  Args:
    mean: posterior mean of one example, shape ``[...]``.
    log_variance: posterior log-variance, same shape.

  Returns:
    Scalar KL in nats (>= 0).

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> mean = jnp.array([1.0, 0.0])
    >>> log_variance = jnp.log(jnp.array([1.0, 2.0]))  # variances 1 and 2
    >>> round(float(vae_jax.kl_standard_normal(mean, log_variance)), 4)
    0.6534
  """
  return sum_over_data(kl_standard_normal_per_dim(mean, log_variance))


def standard_normal_log_density(z: Array) -> Array:
  """log N(z; 0, I) = -(1/2) sum_j (z_j^2 + log 2 pi), a scalar in nats.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> round(float(vae_jax.standard_normal_log_density(jnp.zeros(2))), 4)
    -1.8379
  """
  z = checks.float_array("z", z)
  checks.not_nan("z", z)
  return -0.5 * sum_over_data(jnp.square(z) + _LOG_2PI)


def diagonal_gaussian_log_density(
  z: Array, mean: Array, log_variance: Array
) -> Array:
  """log N(z; m, diag(exp(v))) of a diagonal Gaussian posterior q(z | x).

  log q(z) = -(1/2) sum_j [(z_j - m_j)^2 exp(-v_j) + v_j + log 2 pi].

  Args:
    z: latent sample, shape ``[...]``.
    mean: posterior mean, same shape.
    log_variance: posterior log-variance, same shape.

  Returns:
    Scalar log-density in nats.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> z, mean = jnp.array([1.0, 0.0]), jnp.zeros(2)
    >>> log_variance = jnp.zeros(2)
    >>> log_q = vae_jax.diagonal_gaussian_log_density(z, mean, log_variance)
    >>> round(float(log_q), 4)
    -2.3379
  """
  mean, log_variance = _posterior(mean, log_variance)
  z = _sample(z, mean)
  terms = jnp.square(z - mean) * jnp.exp(-log_variance) + log_variance
  return -0.5 * sum_over_data(terms + _LOG_2PI)


def kl_monte_carlo(z: Array, mean: Array, log_variance: Array) -> Array:
  """Single-sample estimate of KL(q || N(0, I)): log q(z | x) - log p(z).

  Unbiased when z ~ q(z | x); its average over samples converges to
  :func:`kl_standard_normal`. Use it for priors or posteriors with no closed
  form, or to match the IWAE estimator's terms.

  Args:
    z: a sample from q, shape ``[...]``.
    mean: posterior mean, same shape.
    log_variance: posterior log-variance, same shape.

  Returns:
    Scalar estimate in nats (can be negative for one sample).

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> z = mean = jnp.array([1.0, 0.0])
    >>> round(float(vae_jax.kl_monte_carlo(z, mean, jnp.zeros(2))), 4)
    0.5
  """
  return diagonal_gaussian_log_density(
    z, mean, log_variance
  ) - standard_normal_log_density(z)


def reparameterize(mean: Array, log_variance: Array, eps: Array) -> Array:
  """A sample of q(z | x) = N(mean, exp(log_variance)) from standard noise.

  ``z = mean + exp(log_variance / 2) * eps`` (Kingma & Welling, 2014): a
  differentiable function of the posterior's parameters. The one place the
  reparameterisation is written; training, evaluation and sweeps call it.

  Args:
    mean: ``[..., L]``.
    log_variance: broadcastable with ``mean``.
    eps: ``[..., L]`` standard normal noise, broadcastable with both.

  Returns:
    z, of the broadcast shape.
  """
  return mean + jnp.exp(0.5 * log_variance) * eps
