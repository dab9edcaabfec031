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

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, logits = jnp.array([1.0, 0.0]), jnp.array([2.0, -1.0])
    >>> round(float(vae_jax.bernoulli_log_likelihood(x, logits)), 4)
    -0.4402
    >>> round(float(vae_jax.bernoulli_log_likelihood(x, 1000 * logits)), 4)
    0.0
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

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, probs = jnp.array([1.0, 0.0]), jnp.array([0.9, 0.2])
    >>> fn = vae_jax.bernoulli_log_likelihood_from_probs
    >>> round(float(fn(x, probs)), 4)
    -0.3285
    >>> float(fn(x[:1], jnp.zeros(1)))  # log 0 clamped at -100, as in PyTorch
    -100.0
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

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, mean = jnp.array([0.2, 0.4]), jnp.array([0.1, 0.5])
    >>> round(float(vae_jax.gaussian_log_likelihood(x, mean, 0.01)), 4)
    1.7673
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

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> logits = jnp.array([0.0, 2.0, 50.0])  # log 2, log(2 / tanh 1), ~log 50
    >>> log_c = vae_jax.continuous_bernoulli_log_normalizer(logits)
    >>> [round(float(c), 4) for c in log_c]
    [0.6931, 0.9655, 3.912]
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

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, logits = jnp.array([0.9, 0.1]), jnp.array([2.0, -2.0])
    >>> ll = vae_jax.continuous_bernoulli_log_likelihood(x, logits)
    >>> round(float(ll), 4)  # a density on [0, 1]^2: may be > 0
    1.2771
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

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, mean = jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5])
    >>> round(float(vae_jax.optimal_sigma2(x, mean)), 4)
    0.25
  """
  x = checks.float_array("x", x)
  mean = checks.float_array("mean", mean)
  checks.same_shape(("x", x), ("mean", mean))
  checks.not_empty("x", x)  # the mean of no squared errors is 0 / 0
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

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x = jnp.array([[0.0, 1.0], [0.0, 0.5]])
    >>> mean = jnp.array([[0.5, 0.5], [0.0, 0.5]])
    >>> round(float(vae_jax.optimal_sigma2_batch(x, mean)), 4)  # 0.5 / 4
    0.125
  """
  x = checks.float_array("x", x)
  checks.at_least_rank("x", x, 1)
  return optimal_sigma2(x, mean)


def _log1mexp(w: Array) -> Array:
  """log(1 - exp(-w)) for w > 0, accurate at both ends (Maechler, 2012)."""
  small = w < math.log(2.0)
  # Each branch sees a safe w where it is unused: at tiny w, log1p(-exp(-w))
  # is log(0) and its gradient would turn the other branch's into NaN.
  near_zero = jnp.log(-jnp.expm1(-jnp.where(small, w, 1.0)))
  far = jnp.log1p(-jnp.exp(-jnp.where(small, 1.0, w)))
  return jnp.where(small, near_zero, far)


def _discretized_logistic_log_mass(
  x: Array, mean: Array, log_scale: Array | float, levels: int
) -> Array:
  """Elementwise log P(x) of a logistic(mean, exp(log_scale)) binned to levels.

  x is snapped to its level k = round(x (levels - 1)), so neighbouring bins
  share the edge (k + 1/2) / (levels - 1) bit for bit and the masses add up
  to 1. With u, l the standardised upper and lower edges, a middle bin is
  sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(-(u - l))), where
  u - l = 1 / (s (levels - 1)) exactly: three logs, each <= 0 and accurate,
  so nothing cancels and no mass is formed that could underflow.
  """
  n = levels - 1
  k = jnp.clip(jnp.round(x * n), 0, n)
  inv_scale = jnp.exp(-log_scale)
  upper = ((k + 0.5) / n - mean) * inv_scale
  lower = ((k - 0.5) / n - mean) * inv_scale
  log_below_upper = jax.nn.log_sigmoid(upper)  # the first bin, (-inf, u)
  log_above_lower = jax.nn.log_sigmoid(-lower)  # the last bin, (l, inf)
  middle = log_below_upper + log_above_lower + _log1mexp(inv_scale / n)
  return jnp.where(
    k == 0, log_below_upper, jnp.where(k == n, log_above_lower, middle)
  )


def _on_levels(levels: int):
  """The domain check of x for ``levels`` levels: in [0, 1] and on the grid."""

  def domain(name: str, x: Array) -> None:
    checks.unit_interval(name, x)
    checks.on_grid(name, x, levels)

  return domain


def _validated_location_scale(x, x_domain, mean, scale_name, scale, scale_ok):
  # x and mean of one shape, a scale (or log-scale) that broadcasts to it.
  x, mean = _validated_pair(x, x_domain, "mean", mean)
  scale = checks.float_array(scale_name, scale, scalar_ok=True)
  checks.broadcastable_to(scale_name, scale, "x", x)
  checks.finite("mean", mean)
  scale_ok(scale_name, scale)
  return x, mean, scale


def discretized_logistic_log_likelihood(
  x: Array, mean: Array, log_scale: Array | float, *, levels: int = 256
) -> Array:
  """Log-probability of quantised data under a discretised logistic (Salimans et al., 2017).

  log P(x | m, s) = sum_d log[sigmoid((x_d + h - m_d) / s_d)
                              - sigmoid((x_d - h - m_d) / s_d)],
  with s = exp(log_scale) and h = 1 / (2 (levels - 1)): each level
  k / (levels - 1) owns the bin of width 2 h around it, the first bin open to
  -inf (its term is log sigmoid((h - m_d) / s_d)) and the last to +inf. A
  probability mass on the levels, so the value is <= 0 and an exact discrete
  NLL, with no dequantisation bound: the PixelCNN++ decoder (Salimans et al.,
  2017, "PixelCNN++", ICLR) with one component and no channel coupling.

  Computed in log space as a product of sigmoids (see the helper), never as
  a difference of probabilities, so it is accurate at every bin mass and
  needs no PixelCNN++ fallback to log-density at the centre + log(2 h) where
  that mass would underflow (it agrees with it there). Finite values and
  gradients in float32 for log_scale in [-10, 10] and |mean| <= 50. The
  gradient in x is zero: x is snapped to its nearest level.

  Args:
    x: data of one example, shape ``[...]``, on the grid k / (levels - 1),
      k = 0, ..., levels - 1 (e.g. uint8 pixels / 255).
    mean: location m of each element's logistic, same shape as ``x``, finite.
    log_scale: log s, finite; a scalar or an array broadcastable to
      ``x.shape`` (e.g. one per pixel).
    levels: the number of levels, a Python int >= 2 (static under jit).

  Returns:
    Scalar log-probability in nats.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x = jnp.array([0, 128, 255]) / 255
    >>> mean = jnp.array([0.1, 0.5, 0.9])
    >>> ll = vae_jax.discretized_logistic_log_likelihood(x, mean, -3.0)
    >>> round(float(ll), 4)
    -8.1277
  """
  levels = checks.integer("levels", levels, at_least=2)
  x, mean, log_scale = _validated_location_scale(
    x, _on_levels(levels), mean, "log_scale", log_scale, checks.finite
  )
  return sum_over_data(
    _discretized_logistic_log_mass(x, mean, log_scale, levels)
  )


def discretized_logistic_mixture_log_likelihood(
  x: Array,
  logit_weights: Array,
  means: Array,
  log_scales: Array,
  *,
  levels: int = 256,
) -> Array:
  """Log-probability under a per-element mixture of discretised logistics (Salimans et al., 2017).

  log P(x) = sum_d logsumexp_j [log softmax(w_d)_j + log P(x_d | m_dj, s_dj)],
  with log P(x_d | m, s) the log bin mass of
  :func:`discretized_logistic_log_likelihood` and s = exp(log_scales): each
  element has its own n-component mixture. The RGB channel coupling of
  PixelCNN++ (Salimans et al., 2017, ICLR) is not included. One component is
  the plain discretised logistic.

  Args:
    x: data of one example, shape ``[...]``, on the grid k / (levels - 1).
    logit_weights: unnormalised log mixture weights w, shape ``[..., n]``
      (``x.shape`` plus the component axis), finite.
    means: component locations, shape ``[..., n]``, finite.
    log_scales: component log scales, shape ``[..., n]``, finite.
    levels: the number of levels, a Python int >= 2 (static under jit).

  Returns:
    Scalar log-probability in nats.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x = jnp.array([0, 128, 255]) / 255
    >>> means = jnp.array([[0.1, 0.6], [0.3, 0.5], [0.9, 1.0]])
    >>> ll = vae_jax.discretized_logistic_mixture_log_likelihood(
    ...   x, jnp.zeros((3, 2)), means, jnp.full((3, 2), -3.0)
    ... )
    >>> round(float(ll), 4)
    -8.5008
  """
  levels = checks.integer("levels", levels, at_least=2)
  x = checks.float_array("x", x)
  named = (
    ("logit_weights", checks.float_array("logit_weights", logit_weights)),
    ("means", checks.float_array("means", means)),
    ("log_scales", checks.float_array("log_scales", log_scales)),
  )
  checks.same_shape(*named)
  checks.with_trailing_axis(*named[0], "x", x)
  _on_levels(levels)("x", x)
  for name, value in named:
    checks.finite(name, value)
  (_, logit_weights), (_, means), (_, log_scales) = named
  log_mass = _discretized_logistic_log_mass(
    x[..., None], means, log_scales, levels
  )
  log_weights = jax.nn.log_softmax(logit_weights, axis=-1)
  return sum_over_data(jax.nn.logsumexp(log_weights + log_mass, axis=-1))


def laplace_log_likelihood(
  x: Array, mean: Array, scale: Array | float
) -> Array:
  """Log-density of a Laplace decoder, the model behind the L1 loss.

  log p(x | m, b) = -sum_d [|x_d - m_d| / b_d + log(2 b_d)].
  With a scalar b and D = x.size this is -SAE / b - D log(2 b): at a fixed b
  maximising it minimises the sum of absolute errors, as the Gaussian's
  (:func:`gaussian_log_likelihood`) does the squared ones. The constant is
  kept, so values at different b are comparable; values may be positive.

  Args:
    x: data of one example, shape ``[...]``.
    mean: decoder location (the median), same shape as ``x``, finite.
    scale: b, finite and > 0; a scalar or an array broadcastable to
      ``x.shape`` (e.g. one scale per pixel).

  Returns:
    Scalar log-density in nats (with respect to Lebesgue measure).

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, mean = jnp.array([0.2, 0.5]), jnp.array([0.25, 0.5])
    >>> round(float(vae_jax.laplace_log_likelihood(x, mean, 0.1)), 4)
    2.7189
  """
  x, mean, scale = _validated_location_scale(
    x, checks.not_nan, mean, "scale", scale, checks.positive_finite
  )
  terms = jnp.abs(x - mean) / scale + jnp.log(2 * scale)
  return -sum_over_data(jnp.broadcast_to(terms, x.shape))
