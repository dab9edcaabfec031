"""Per-example VAE objectives: the negative ELBO with beta, and the IWAE bound.

ELBO(x) = E_q[log p(x | z)] - beta KL(q(z | x) || p(z)). Its two terms are
reported as *distortion* D = -log p(x | z) (one-sample estimate of minus the
reconstruction term) and *rate* R = KL (Alemi et al., 2018), all in nats per
example; the negative ELBO is D + beta R.
"""

from collections.abc import Callable
import math

import jax

from vae_jax import checks
from vae_jax import divergences
from vae_jax import likelihoods

Array = jax.Array
LogLikelihood = Callable[..., Array]

LIKELIHOODS: dict[str, LogLikelihood] = {
  "bernoulli": likelihoods.bernoulli_log_likelihood,
  "bernoulli_probs": likelihoods.bernoulli_log_likelihood_from_probs,
  "continuous_bernoulli": likelihoods.continuous_bernoulli_log_likelihood,
  "gaussian": likelihoods.gaussian_log_likelihood,
}


def get_likelihood(likelihood: str | LogLikelihood) -> LogLikelihood:
  """Returns the log-likelihood function for a name in ``LIKELIHOODS``, or ``likelihood`` itself if callable."""
  if callable(likelihood):
    return likelihood
  if likelihood not in LIKELIHOODS:
    raise ValueError(
      f"likelihood must be one of {sorted(LIKELIHOODS)} or a"
      f" function (x, decoder_output, ...) -> scalar, got"
      f" {likelihood!r}."
    )
  return LIKELIHOODS[likelihood]


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
    decoder_output: what the likelihood takes as its second argument (logits,
      probabilities or mean), decoded from one sample z ~ q(z | x).
    mean: posterior mean, shape ``[latent...]``.
    log_variance: posterior log-variance, same shape.
    likelihood: a name in ``LIKELIHOODS`` or a function
      ``(x, decoder_output, **likelihood_kwargs) -> scalar log-likelihood``.
    z: the sample that was decoded. If given, the rate is the Monte Carlo
      estimate log q(z | x) - log p(z); otherwise the closed-form KL.
    **likelihood_kwargs: passed to the likelihood (e.g. ``sigma2=0.1``).

  Returns:
    ``(rate, distortion)``: KL and -log p(x | z), scalars in nats.
  """
  log_likelihood = get_likelihood(likelihood)
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
  """
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
