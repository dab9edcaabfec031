"""Per-example VAE objectives: the negative ELBO with beta, and the IWAE bound.

ELBO(x) = E_q[log p(x | z)] - beta KL(q(z | x) || p(z)). Its two terms are
reported as *distortion* D = -log p(x | z) (one-sample estimate of minus the
reconstruction term) and *rate* R = KL (Alemi et al., 2018), all in nats per
example; the negative ELBO is D + beta R.
"""

from collections.abc import Callable
import math

import jax
import jax.numpy as jnp

from vae_jax import checks
from vae_jax import decoders
from vae_jax import divergences

Array = jax.Array
LogLikelihood = Callable[..., Array]


def _log_likelihood(likelihood: str | LogLikelihood) -> LogLikelihood:
  """A registry entry's log-likelihood (:data:`vae_jax.DECODERS`), or
  ``likelihood`` itself if it is a function."""
  if callable(likelihood):
    return likelihood
  if likelihood not in decoders.DECODERS:
    raise ValueError(
      f"likelihood must be one of {decoders.NAMES} (vae_jax.DECODERS) or a"
      f" function (x, decoder_output, ...) -> scalar, got {likelihood!r}."
    )
  return decoders.DECODERS[likelihood].log_likelihood


def rate_and_distortion(
  x: Array,
  decoder_output: Array,
  mean: Array,
  log_variance: Array,
  *,
  likelihood: str | LogLikelihood = "bernoulli",
  z: Array | None = None,
  **likelihood_kwargs,
) -> tuple[Array, Array]:
  """The two terms of the negative ELBO of one example.

  Args:
    x: one example, shape ``[...]``.
    decoder_output: what the likelihood takes as its second argument (for
      a registry name, the entry's ``output``: e.g. logits), decoded from one
      sample z ~ q(z | x).
    mean: posterior mean, shape ``[latent...]``.
    log_variance: posterior log-variance, same shape.
    likelihood: a name in :data:`vae_jax.DECODERS` or a function
      ``(x, decoder_output, **likelihood_kwargs) -> scalar log-likelihood``.
    z: the sample that was decoded. If given, the rate is the Monte Carlo
      estimate log q(z | x) - log p(z); otherwise the closed-form KL.
    **likelihood_kwargs: passed to the likelihood (e.g. ``sigma2=0.1``).

  Returns:
    ``(rate, distortion)``: KL and -log p(x | z), scalars in nats.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, logits = jnp.array([1.0, 0.0]), jnp.zeros(2)
    >>> mean, log_variance = jnp.array([1.0]), jnp.zeros(1)
    >>> r, d = vae_jax.rate_and_distortion(x, logits, mean, log_variance)
    >>> round(float(r), 4), round(float(d), 4)
    (0.5, 1.3863)
  """
  log_likelihood = _log_likelihood(likelihood)
  distortion = -log_likelihood(x, decoder_output, **likelihood_kwargs)
  if z is None:
    rate = divergences.kl_standard_normal(mean, log_variance)
  else:
    rate = divergences.kl_monte_carlo(z, mean, log_variance)
  return rate, distortion


def negative_elbo(
  x: Array,
  decoder_output: Array,
  mean: Array,
  log_variance: Array,
  *,
  beta: Array | float = 1.0,
  likelihood: str | LogLikelihood = "bernoulli",
  z: Array | None = None,
  **likelihood_kwargs,
) -> Array:
  """Per-example negative (beta-)ELBO: -log p(x | z) + beta KL(q(z | x) || N(0, I)).

  With beta = 1 this is an upper bound on -log p(x). Arguments are those of
  :func:`rate_and_distortion`, plus ``beta`` >= 0 (a scalar; may be traced,
  e.g. vmapped over a sweep).

  Returns:
    Scalar loss in nats; ``jax.vmap`` it over the batch and take the mean.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, logits = jnp.array([1.0, 0.0]), jnp.zeros(2)
    >>> mean, log_variance = jnp.array([1.0]), jnp.zeros(1)
    >>> loss = vae_jax.negative_elbo(x, logits, mean, log_variance, beta=2.0)
    >>> round(float(loss), 4)  # distortion 2 log 2 + 2 x rate 0.5
    2.3863
  """
  beta = checks.float_array("beta", beta, scalar_ok=True)
  checks.non_negative_finite("beta", beta)
  rate, distortion = rate_and_distortion(
    x,
    decoder_output,
    mean,
    log_variance,
    likelihood=likelihood,
    z=z,
    **likelihood_kwargs,
  )
  return distortion + beta * rate


def log_importance_weight(
  log_likelihood: Array, z: Array, mean: Array, log_variance: Array
) -> Array:
  """log w = log p(x | z) + log p(z) - log q(z | x) for one sample z ~ q.

  Args:
    log_likelihood: log p(x | z), a scalar from one of the likelihoods.
    z: the sample, shape ``[latent...]``.
    mean: posterior mean, same shape.
    log_variance: posterior log-variance, same shape.

  Returns:
    Scalar log-weight in nats.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> z = mean = jnp.array([1.0])
    >>> log_lik, log_variance = jnp.array(-1.0), jnp.zeros(1)
    >>> log_w = vae_jax.log_importance_weight(log_lik, z, mean, log_variance)
    >>> round(float(log_w), 4)  # -1 - (log q(z) - log p(z))
    -1.5
  """
  checks.scalar("log_likelihood", log_likelihood)  # a vector would broadcast
  return log_likelihood - divergences.kl_monte_carlo(z, mean, log_variance)


def importance_weighted_bound(log_weights: Array) -> Array:
  """IWAE bound of one example (Burda et al., 2016) from K log-weights.

  L_K = log (1/K) sum_k w_k = logsumexp_k(log w_k) - log K, a lower bound on
  log p(x) that tightens as K grows; L_1 is the ELBO estimate. With K = 5000
  it is the usual estimate of log p(x) (its negative: the test NLL).

  Args:
    log_weights: shape ``[K]``, from :func:`log_importance_weight`.

  Returns:
    Scalar bound in nats (computed with logsumexp, stable for any weights).

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> log_w = jnp.log(jnp.array([1.0, 2.0, 3.0]))
    >>> round(float(vae_jax.importance_weighted_bound(log_w)), 4)  # log 2
    0.6931
  """
  log_weights = checks.float_array("log_weights", log_weights)
  if log_weights.ndim != 1 or log_weights.shape[0] < 1:
    raise ValueError(
      "log_weights must have shape [K] with K >= 1 (one"
      f" example), got {log_weights.shape}; vmap over examples."
    )
  checks.not_nan("log_weights", log_weights)
  num_samples = log_weights.shape[0]
  return jax.nn.logsumexp(log_weights) - math.log(num_samples)


# A decoder's log p(x | z) for one example and one sample, parameters closed
# over: ``(x [...], z [latent...]) -> scalar``.
SampleLogLikelihood = Callable[[Array, Array], Array]

_KL_FORMS = ("closed_form", "monte_carlo")
_IWAE_GRADIENTS = ("reparam", "dreg")


def _float_posterior(mean, log_variance, eps):
  """q's parameters and the noise as float arrays, mean and log_variance of
  one shape (errors name the argument)."""
  mean = checks.float_array("mean", mean)
  log_variance = checks.float_array("log_variance", log_variance)
  eps = checks.float_array("eps", eps)
  checks.same_shape(("mean", mean), ("log_variance", log_variance))
  return mean, log_variance, eps


def _samples(mean, log_variance, eps):
  """Validates q's parameters and the noise; z_k = mean + std * eps_k, [K, ...]."""
  mean, log_variance, eps = _float_posterior(mean, log_variance, eps)
  if (
    eps.ndim != mean.ndim + 1 or not eps.shape[0] or eps.shape[1:] != mean.shape
  ):
    latent = "".join(f", {size}" for size in mean.shape)
    raise ValueError(
      f"eps must have shape [K{latent}] with K >= 1 (K draws of noise of the"
      f" shape of mean), got {eps.shape}."
    )
  return mean, log_variance, divergences.reparameterize(mean, log_variance, eps)


def _log_likelihoods(log_likelihood_fn, x, z):
  """log p(x | z_k) for each of the K samples: ``[K]``."""
  log_likelihood = jax.vmap(log_likelihood_fn, in_axes=(None, 0))(x, z)
  if log_likelihood.shape != z.shape[:1]:
    raise ValueError(
      "log_likelihood_fn(x, z) must return one scalar log p(x | z) per"
      f" sample; over {z.shape[0]} samples it returned shape"
      f" {log_likelihood.shape} instead of {z.shape[:1]}."
    )
  return log_likelihood


def _log_weights(log_likelihood, z, mean, log_variance):
  """log w_k of :func:`log_importance_weight` for each sample: ``[K]``."""
  return jax.vmap(log_importance_weight, (0, 0, None, None))(
    log_likelihood, z, mean, log_variance
  )


def multi_sample_elbo(
  log_likelihood_fn: SampleLogLikelihood,
  x: Array,
  mean: Array,
  log_variance: Array,
  eps: Array,
  *,
  kl: str = "closed_form",
) -> Array:
  """k-sample ELBO of one example: the mean of K single-sample ELBO terms.

  Burda et al. (2016)'s "VAE, k": with z_k = mean + exp(log_variance / 2) eps_k,

    closed_form:  (1/K) sum_k log p(x | z_k) - KL(q(z | x) || N(0, I)),
    monte_carlo:  (1/K) sum_k log w_k,  log w_k = log p(x|z_k) + log p(z_k)
                                                  - log q(z_k | x).

  Both are unbiased for the ELBO, with the same reparameterised gradient in
  expectation. ``closed_form`` is the default because it is what training's
  single-sample loss uses: at K = 1 it equals ``-negative_elbo(x,
  decoder(z_1), mean, log_variance)`` bit for bit (eagerly; under jit to
  rounding, as XLA may fuse the two programs differently).
  ``monte_carlo`` shares its log-weights with :func:`iwae_objective`.

  Args:
    log_likelihood_fn: ``(x, z) -> scalar`` log p(x | z) of one sample, the
      decoder's parameters closed over (so ``jax.grad`` reaches them).
    x: one example, shape ``[...]``.
    mean: posterior mean, shape ``[latent...]``.
    log_variance: posterior log-variance, same shape.
    eps: standard normal noise, shape ``[K, latent...]``, K >= 1.
    kl: ``"closed_form"`` or ``"monte_carlo"``.

  Returns:
    Scalar bound on log p(x) in nats (maximise it; its negative is the loss).

  Example:
    >>> import jax.numpy as jnp
    >>> from vae_jax import gaussian_log_likelihood, multi_sample_elbo
    >>> ll = lambda x, z: gaussian_log_likelihood(x, z, 1.0)
    >>> z0, eps = jnp.zeros(2), jnp.ones((3, 2))
    >>> print(f"{multi_sample_elbo(ll, jnp.ones(2), z0, z0, eps):.4f}")
    -1.8379
  """
  if kl not in _KL_FORMS:
    raise ValueError(f"kl must be one of {_KL_FORMS}, got {kl!r}.")
  mean, log_variance, z = _samples(mean, log_variance, eps)
  log_likelihood = _log_likelihoods(log_likelihood_fn, x, z)
  if kl == "monte_carlo":
    return jnp.mean(_log_weights(log_likelihood, z, mean, log_variance))
  return jnp.mean(log_likelihood) - divergences.kl_standard_normal(
    mean, log_variance
  )


@jax.custom_vjp
def _scale_cotangent(z: Array, weights: Array) -> Array:
  """Identity on z ``[..., K, latent...]``; backward, z's cotangent is scaled
  by ``weights`` ``[..., K]``."""
  del weights
  return z


def _scale_cotangent_fwd(z, weights):
  return z, weights


def _scale_cotangent_bwd(weights, z_bar):
  shape = weights.shape + (1,) * (z_bar.ndim - weights.ndim)
  return z_bar * weights.reshape(shape), jnp.zeros_like(weights)


_scale_cotangent.defvjp(_scale_cotangent_fwd, _scale_cotangent_bwd)


def iwae_objective(
  log_likelihood_fn: SampleLogLikelihood,
  x: Array,
  mean: Array,
  log_variance: Array,
  eps: Array,
  *,
  gradient: str = "reparam",
) -> Array:
  """IWAE bound of one example from K reparameterised samples, two gradients.

  L_K = log (1/K) sum_k w_k (Burda et al., 2016), with z_k = mean +
  exp(log_variance / 2) eps_k and log w_k from :func:`log_importance_weight`;
  the value is :func:`importance_weighted_bound` of those weights for either
  ``gradient``. With w~_k = w_k / sum_j w_j and phi = (mean, log_variance):

    reparam:  grad L_K of the reparameterised bound, for decoder and encoder.
    dreg:     decoder: the same, sum_k w~_k grad_theta log w_k;
              encoder: sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi),
              log q's direct (score) term removed,

  the doubly reparameterised estimator of Tucker et al. (2019), unbiased for
  the same gradient, whose encoder signal-to-noise ratio grows with K where
  reparam's shrinks (Rainforth et al., 2018). ``dreg`` is an autodiff rule:
  reverse mode, first order (``jax.grad``, not ``jax.jvp`` or Hessians).

  Args:
    log_likelihood_fn: ``(x, z) -> scalar`` log p(x | z) of one sample, the
      decoder's parameters closed over (so ``jax.grad`` reaches them).
    x: one example, shape ``[...]``.
    mean: posterior mean, shape ``[latent...]``.
    log_variance: posterior log-variance, same shape.
    eps: standard normal noise, shape ``[K, latent...]``, K >= 1.
    gradient: ``"reparam"`` or ``"dreg"``.

  Returns:
    Scalar bound on log p(x) in nats (maximise it; its negative is the loss).

  Example:
    >>> import jax.numpy as jnp
    >>> from vae_jax import gaussian_log_likelihood, iwae_objective
    >>> ll = lambda x, z: gaussian_log_likelihood(x, z, 1.0)
    >>> z0, eps = jnp.zeros(2), jnp.ones((3, 2))
    >>> print(f"{iwae_objective(ll, jnp.ones(2), z0, z0, eps, gradient='dreg'):.4f}")
    -1.8379
  """
  _check_gradient(gradient)
  mean, log_variance, z = _samples(mean, log_variance, eps)

  def log_weights(z, mean, log_variance):
    log_likelihood = _log_likelihoods(log_likelihood_fn, x, z)
    return _log_weights(log_likelihood, z, mean, log_variance)

  return _iwae_bound(
    log_weights, z, mean, log_variance, gradient, importance_weighted_bound
  )


def _check_gradient(gradient: str) -> None:
  if gradient not in _IWAE_GRADIENTS:
    raise ValueError(
      f"gradient must be one of {_IWAE_GRADIENTS}, got {gradient!r}."
    )


def _iwae_bound(log_weights, z, mean, log_variance, gradient, bound):
  """The IWAE bound (:func:`iwae_objective`) with either gradient.

  ``log_weights(z, mean, log_variance)`` gives log w ``[..., K]`` of the
  samples z ``[..., K, latent...]``; ``bound`` turns those into the bound
  ``[...]`` (log-mean-exp over K).
  """
  if gradient == "reparam":
    return bound(log_weights(z, mean, log_variance))
  # w~_k from a stopped pass (under jit XLA merges it with the next one)
  # scales z's cotangent; the bound's own w~_k makes it w~_k^2.
  q = jax.lax.stop_gradient((mean, log_variance))
  w_tilde = jax.nn.softmax(jax.lax.stop_gradient(log_weights(z, *q)), axis=-1)
  return bound(log_weights(_scale_cotangent(z, w_tilde), *q))


# A decoder's log p(x_b | z_bk) of every example of a batch and every sample
# at once: ``z [B, K, latent...] -> [B, K]``, the data and the decoder's
# parameters closed over.
BatchLogLikelihoods = Callable[[Array], Array]


def _batch_samples(mean, log_variance, eps):
  """:func:`_samples` of a batch: z_bk = mean_b + std_b * eps_bk, ``[B, K, ...]``."""
  mean, log_variance, eps = _float_posterior(mean, log_variance, eps)
  if (
    mean.ndim < 2
    or eps.shape[:1] + eps.shape[2:] != mean.shape
    or eps.ndim != mean.ndim + 1
    or not eps.shape[1]
  ):
    latent = "".join(f", {size}" for size in mean.shape[1:])
    raise ValueError(
      f"mean must have shape [B, latent...] and eps [B, K{latent}] with"
      f" K >= 1 (K draws of noise per example), got mean {mean.shape} and"
      f" eps {eps.shape}."
    )
  z = divergences.reparameterize(mean[:, None], log_variance[:, None], eps)
  return mean, log_variance, z


def _batch_log_likelihoods(log_likelihoods_fn, z):
  """log p(x_b | z_bk) ``[B, K]``, its shape checked."""
  log_likelihood = log_likelihoods_fn(z)
  if jnp.shape(log_likelihood) != z.shape[:2]:
    raise ValueError(
      "log_likelihoods_fn(z) must return log p(x_b | z_bk) of shape [B, K]"
      f" = {z.shape[:2]} for z of shape {z.shape}, got"
      f" {jnp.shape(log_likelihood)}."
    )
  return log_likelihood


def multi_sample_elbo_batch(
  log_likelihoods_fn: BatchLogLikelihoods,
  mean: Array,
  log_variance: Array,
  eps: Array,
  *,
  kl: str = "closed_form",
) -> Array:
  """:func:`multi_sample_elbo` of each example of a batch, ``[B]``.

  The same values and gradients as ``jax.vmap`` of :func:`multi_sample_elbo`
  over the batch (to rounding), but ``log_likelihoods_fn`` gets all B x K
  samples in one call, so a decoder runs once on a ``[B * K]`` batch: under
  ``vmap`` it runs on ``[B, K]`` slices, whose backward pass XLA lays out
  with extra transposes (at Burda et al.'s sizes on a 2-core CPU, IWAE
  k = 5 trained at 0.86x a bare JAX epoch vmapped and 0.99x batched: the
  README's speed section).

  Args:
    log_likelihoods_fn: ``z [B, K, latent...] -> [B, K]``, log p(x_b | z_bk)
      in nats, the data and the decoder's parameters closed over.
    mean: posterior means, ``[B, latent...]``.
    log_variance: posterior log-variances, same shape.
    eps: standard normal noise, ``[B, K, latent...]``, K >= 1.
    kl: ``"closed_form"`` or ``"monte_carlo"`` (:func:`multi_sample_elbo`).

  Returns:
    ``[B]`` bounds on log p(x_b) in nats.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from vae_jax import gaussian_log_likelihood, multi_sample_elbo_batch
    >>> x = jnp.ones((2, 2))
    >>> ll = jax.vmap(jax.vmap(gaussian_log_likelihood, (None, 0, None)), (0, 0, None))
    >>> z0, eps = jnp.zeros((2, 2)), jnp.ones((2, 3, 2))
    >>> elbo = multi_sample_elbo_batch(lambda z: ll(x, z, 1.0), z0, z0, eps)
    >>> print(f"{elbo[0]:.4f}")
    -1.8379
  """
  if kl not in _KL_FORMS:
    raise ValueError(f"kl must be one of {_KL_FORMS}, got {kl!r}.")
  mean, log_variance, z = _batch_samples(mean, log_variance, eps)
  log_likelihood = _batch_log_likelihoods(log_likelihoods_fn, z)
  if kl == "monte_carlo":
    log_weights = jax.vmap(_log_weights)(log_likelihood, z, mean, log_variance)
    return jnp.mean(log_weights, axis=1)
  kl_value = jax.vmap(divergences.kl_standard_normal)(mean, log_variance)
  return jnp.mean(log_likelihood, axis=1) - kl_value


def iwae_objective_batch(
  log_likelihoods_fn: BatchLogLikelihoods,
  mean: Array,
  log_variance: Array,
  eps: Array,
  *,
  gradient: str = "reparam",
) -> Array:
  """:func:`iwae_objective` of each example of a batch, ``[B]``.

  The same values and gradients (``reparam`` or ``dreg``) as ``jax.vmap``
  of :func:`iwae_objective` over the batch, to rounding, with the decoder
  called once on all B x K samples (see :func:`multi_sample_elbo_batch`):
  the form training uses.

  Args:
    log_likelihoods_fn: ``z [B, K, latent...] -> [B, K]``, log p(x_b | z_bk)
      in nats, the data and the decoder's parameters closed over.
    mean: posterior means, ``[B, latent...]``.
    log_variance: posterior log-variances, same shape.
    eps: standard normal noise, ``[B, K, latent...]``, K >= 1.
    gradient: ``"reparam"`` or ``"dreg"`` (:func:`iwae_objective`).

  Returns:
    ``[B]`` bounds on log p(x_b) in nats.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from vae_jax import gaussian_log_likelihood, iwae_objective_batch
    >>> x = jnp.ones((2, 2))
    >>> ll = jax.vmap(jax.vmap(gaussian_log_likelihood, (None, 0, None)), (0, 0, None))
    >>> z0, eps = jnp.zeros((2, 2)), jnp.ones((2, 3, 2))
    >>> bound = iwae_objective_batch(lambda z: ll(x, z, 1.0), z0, z0, eps)
    >>> print(f"{bound[1]:.4f}")
    -1.8379
  """
  _check_gradient(gradient)
  mean, log_variance, z = _batch_samples(mean, log_variance, eps)

  def log_weights(z, mean, log_variance):
    log_likelihood = _batch_log_likelihoods(log_likelihoods_fn, z)
    return jax.vmap(_log_weights)(log_likelihood, z, mean, log_variance)

  return _iwae_bound(
    log_weights,
    z,
    mean,
    log_variance,
    gradient,
    jax.vmap(importance_weighted_bound),
  )
