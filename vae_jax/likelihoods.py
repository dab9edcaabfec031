"""Per-example decoder log-likelihoods log p(x | z), in nats.

Every function takes ONE example (any shape, e.g. ``[28, 28, 1]`` or ``[784]``)
and returns a scalar summed over all of its data dimensions. Batch with
``jax.vmap`` (or :func:`vae_jax.batched`) and reduce over the batch yourself.
"""

import math

import jax
import jax.numpy as jnp

from vae_jax import checks
from vae_jax.reductions import sum_over_data

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


@jax.custom_jvp
def _bernoulli_terms(x: Array, logits: Array) -> Array:
  """x log sigmoid(l) + (1 - x) log sigmoid(-l), elementwise.

  Both logs share s = log1p(exp(-|l|)): log sigmoid(l) = -(s + max(-l, 0))
  and log sigmoid(-l) = -(s + max(l, 0)), the same values as
  ``jax.nn.log_sigmoid`` computes, finite at any logit (the common form
  x l - softplus(l) loses log sigmoid(l) ~ -exp(-l) to cancellation). One
  exp and one log1p per element instead of two each; the derivatives below
  add one division, where autodiff of the two log_sigmoids adds two more
  exps and their divisions.
  """
  shared = jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return x * -(shared + jnp.maximum(-logits, 0)) + (1 - x) * -(
    shared + jnp.maximum(logits, 0)
  )


@_bernoulli_terms.defjvp
def _bernoulli_terms_jvp(primals, tangents):
  # d/dl = x - sigmoid(l), written x sigmoid(-l) - (1 - x) sigmoid(l) so
  # that x = 1 at l = 20 gives 2e-9, not 1 - 1 = 0 (both sigmoids from one
  # exp and one division); d/dx = log sigmoid(l) - log sigmoid(-l) = l.
  # Written with differentiable ops, so higher derivatives work too.
  x, logits = primals
  dx, dlogits = tangents
  e = jnp.exp(-jnp.abs(logits))
  inverse = 1.0 / (1.0 + e)
  positive = logits >= 0
  sigmoid = jnp.where(positive, 1.0, e) * inverse
  sigmoid_minus = jnp.where(positive, e, 1.0) * inverse
  return (
    _bernoulli_terms(x, logits),
    (x * sigmoid_minus - (1 - x) * sigmoid) * dlogits + logits * dx,
  )


def _validated_pair(x, x_domain, other_name, other):
  x = checks.float_array("x", x)
  other = checks.float_array(other_name, other)
  checks.same_shape(("x", x), (other_name, other))
  x_domain("x", x)
  return x, other


def bernoulli_log_likelihood(x: Array, logits: Array) -> Array:
  """Log-likelihood of a product of Bernoullis parameterised by logits.

  log p(x | l) = sum_d x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d),
  which is exactly minus the binary cross-entropy summed over pixels.

  For x in {0, 1} this is a log-probability (<= 0). For soft targets
  x in (0, 1) it is minus the cross-entropy H(x, sigmoid(l)); it is NOT a
  normalised density over [0, 1] (see
  :func:`continuous_bernoulli_log_likelihood` for one that is).

  Stable at any finite logit: finite values and gradients at |l| = 1e3 in
  float32 and bfloat16. At l = +-inf the value is its limit: 0 where x is
  the certain outcome (x = 1 at +inf, x = 0 at -inf), -inf elsewhere.

  Args:
    x: data of one example, shape ``[...]``, values in [0, 1].
    logits: decoder logits, same shape as ``x``.

  Returns:
    Scalar log-likelihood in nats, dtype of the inputs.
  """
  x, logits = _validated_pair(x, checks.unit_interval, "logits", logits)
  checks.not_nan("logits", logits)
  terms = _bernoulli_terms(x, logits)
  # At l = +-inf the formula meets 0 * inf; the limit is 0 where x is the
  # certain outcome (x = 1 at +inf, x = 0 at -inf) and -inf elsewhere.
  limit = jnp.where(x == (logits > 0), 0.0, -jnp.inf).astype(terms.dtype)
  return sum_over_data(jnp.where(jnp.isinf(logits), limit, terms))


def _clamped_log(log_fn, p: Array, ok: Array, safe: float) -> Array:
  # Double where: log_fn sees a safe value where it is not used, so the
  # gradient stays finite at p = 0 or 1 instead of 0 * inf = NaN.
  return jnp.where(ok, log_fn(jnp.where(ok, p, safe)), -100.0)


def bernoulli_log_likelihood_from_probs(x: Array, probs: Array) -> Array:
  """Bernoulli log-likelihood from probabilities, as PyTorch computes it.

  log p(x | p) = sum_d x_d max(log p_d, -100) + (1 - x_d) max(log1p(-p_d), -100),
  equal to ``-torch.nn.functional.binary_cross_entropy(probs, x,
  reduction='sum')`` including its clamp of each log at -100. Prefer
  :func:`bernoulli_log_likelihood` on logits where you can: probabilities
  that round to 0 or 1 lose the information the clamp papers over.

  Gradients are those of the clamped value (zero where a log is clamped);
  PyTorch's backward instead clamps p (1 - p) at 1e-12. On XLA:CPU subnormal
  probabilities (< 1.2e-38 in float32) are flushed to zero, so their log
  reads -100 where PyTorch gives down to -103.3 ... -87.3.

  Args:
    x: data of one example, shape ``[...]``, values in [0, 1].
    probs: decoder probabilities, same shape as ``x``, values in [0, 1].

  Returns:
    Scalar log-likelihood in nats, dtype of the inputs.
  """
  x, probs = _validated_pair(x, checks.unit_interval, "probs", probs)
  checks.unit_interval("probs", probs)
  log_p = _clamped_log(jnp.log, probs, probs > 0, 1.0)
  # log1p(-p), as PyTorch does: exact for small p where log(1 - p) rounds to 0.
  log_q = _clamped_log(lambda p: jnp.log1p(-p), probs, probs < 1, 0.0)
  terms = x * jnp.maximum(log_p, -100.0) + (1 - x) * jnp.maximum(log_q, -100.0)
  return sum_over_data(terms)


def gaussian_log_likelihood(
  x: Array, mean: Array, sigma2: Array | float
) -> Array:
  """Log-likelihood of an isotropic or diagonal Gaussian decoder.

  log N(x; m, sigma2) = -(1/2) sum_d [(x_d - m_d)^2 / sigma2_d + log(2 pi sigma2_d)].
  With a scalar sigma2 and D = x.size this is
  -SSE / (2 sigma2) - (D / 2) log(2 pi sigma2): the constant is kept, so values
  at different sigma2 are comparable log-likelihoods.

  Args:
    x: data of one example, shape ``[...]``.
    mean: decoder mean, same shape as ``x``.
    sigma2: variance > 0; a scalar or an array broadcastable to ``x.shape``
      (e.g. one variance per pixel).

  Returns:
    Scalar log-likelihood in nats.
  """
  x = checks.float_array("x", x)
  mean = checks.float_array("mean", mean)
  sigma2 = checks.float_array("sigma2", sigma2, scalar_ok=True)
  checks.same_shape(("x", x), ("mean", mean))
  checks.broadcastable_to("sigma2", sigma2, "x", x)
  checks.not_nan("x", x)
  checks.not_nan("mean", mean)
  checks.positive_finite("sigma2", sigma2)
  terms = jnp.square(x - mean) / sigma2 + jnp.log(sigma2) + _LOG_2PI
  return -0.5 * sum_over_data(jnp.broadcast_to(terms, x.shape))


# log C(l) = log 2 + l^2/12 - 7 l^4/1440 + ... (radius pi). Seven terms keep the
# value and the slope below eps: in float64 for |l| < 0.1 (error < 2e-18),
# in lower precision for |l| < 0.8 (slope error < 1e-7), past which the
# closed form's slope cancels less than the series' truncation grows.
_CB_TAYLOR = (
  math.log(2.0),
  1 / 12,
  -7 / 1440,
  31 / 90720,
  -127 / 4838400,
  73 / 34214400,
  -1414477 / 7846046208000,
)
_CB_TAYLOR_BELOW = {64: 0.1, 32: 0.8, 16: 0.8}
# log C(l) = log|l| + 2 exp(-|l|) + O(exp(-3|l|)): exact in float64 above 12.
_CB_ASYMPTOTIC_ABOVE = 12.0


def continuous_bernoulli_log_normalizer(logits: Array) -> Array:
  """Elementwise log C(l) of the continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019).

  C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) with lambda = sigmoid(l),
  which in logit space is C(l) = l / tanh(l / 2), even in l, with C(0) = 2.
  Three regimes, chosen for stability: a Taylor series near 0 (|l| < 0.1 in
  float64, < 0.8 in lower precision: it removes the 0/0 at l = 0 and the
  cancellation in the closed form's gradient), the closed form in between,
  and log|l| + 2 exp(-|l|) for |l| > 12.

  Args:
    logits: any shape.

  Returns:
    log C(l), same shape and dtype as ``logits``, in nats.
  """
  logits = checks.float_array("logits", logits)
  checks.not_nan("logits", logits)
  a = jnp.abs(logits)
  small = a < _CB_TAYLOR_BELOW[jnp.finfo(a.dtype).bits]
  large = a > _CB_ASYMPTOTIC_ABOVE
  a2 = jnp.square(jnp.where(small, a, 0))
  taylor = jnp.polyval(jnp.asarray(_CB_TAYLOR[::-1], a.dtype), a2)
  mid_a = jnp.where(small | large, 1, a)  # keeps 0/0 out of the unused branch
  closed = jnp.log(mid_a / jnp.tanh(mid_a / 2))
  big_a = jnp.where(large, a, 1)
  asymptotic = jnp.log(big_a) + 2 * jnp.exp(-big_a)
  return jnp.where(small, taylor, jnp.where(large, asymptotic, closed))


def continuous_bernoulli_log_likelihood(x: Array, logits: Array) -> Array:
  """Log-density of the continuous Bernoulli on [0, 1]^D (Loaiza-Ganem & Cunningham, 2019).

  log p(x | l) = sum_d [x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d)
                        + log C(l_d)],
  a normalised density for x in [0, 1]: the Bernoulli term of
  :func:`bernoulli_log_likelihood` plus the log-normaliser
  :func:`continuous_bernoulli_log_normalizer`. Values may be positive.

  Args:
    x: data of one example, shape ``[...]``, values in [0, 1].
    logits: decoder logits, same shape as ``x``.

  Returns:
    Scalar log-density in nats (with respect to Lebesgue measure on [0, 1]^D).
  """
  x, logits = _validated_pair(x, checks.unit_interval, "logits", logits)
  # At l = +-inf the density is a point mass: no finite log-density exists.
  checks.not_infinite("logits", logits)
  return sum_over_data(
    _bernoulli_terms(x, logits) + continuous_bernoulli_log_normalizer(logits)
  )


def optimal_sigma2(x: Array, mean: Array) -> Array:
  """Per-example maximum-likelihood variance of a scalar-sigma2 Gaussian decoder.

  argmax_{sigma2} log N(x; m, sigma2) = (1/D) sum_d (x_d - m_d)^2, the mean
  squared error (sigma-VAE, Rybkin et al., 2021). Floor it (e.g. at 1e-6)
  before passing it to :func:`gaussian_log_likelihood` if x can equal m.

  Args:
    x: data of one example, shape ``[...]``.
    mean: decoder mean, same shape.

  Returns:
    Scalar variance (squared data units).
  """
  x = checks.float_array("x", x)
  mean = checks.float_array("mean", mean)
  checks.same_shape(("x", x), ("mean", mean))
  return sum_over_data(jnp.square(x - mean)) / x.size


def optimal_sigma2_batch(x: Array, mean: Array) -> Array:
  """Maximum-likelihood variance shared by a whole batch (as in sigma-VAE).

  The MSE over every example and dimension: sum_{b,d} (x_bd - m_bd)^2 / (B D).
  This is a batch-level function: its input carries the batch axis.

  Args:
    x: a batch, shape ``[B, ...]``.
    mean: decoder means, same shape.

  Returns:
    Scalar variance. Since it maximises the batch log-likelihood, the gradient
    flowing through it is zero (envelope theorem): wrapping it in
    ``jax.lax.stop_gradient`` changes nothing but the work done.
  """
  x = checks.float_array("x", x)
  checks.at_least_rank("x", x, 1)
  return optimal_sigma2(x, mean)
