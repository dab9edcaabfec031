"""vae_jax: the reconstruction term of the VAE objective, in JAX.

Reduction contract (see :mod:`vae_jax.reductions`): every function here takes
ONE example and returns a scalar in nats, SUMMED over all data (or latent)
dimensions; ``jax.vmap`` over the batch and reduce it yourself, by default
with the mean (or use :func:`batched`). All functions are pure and work under
``jax.jit``, ``jax.vmap`` and ``jax.grad``.

Input checks: wrong shapes and dtypes raise at trace time; out-of-domain values
(x outside [0, 1], sigma2 not finite and > 0, beta not finite and >= 0, NaN)
raise when inputs are concrete, and under ``jax.jit`` through :func:`checked`.
A function cannot tell a batch from one example of the batch's shape (it sums
over every axis): ``batched(fn, event_ndim=k)`` vmaps and checks the rank.

:data:`DECODERS` (:mod:`vae_jax.decoders`) is the one registry of decoder
likelihoods, read by :func:`negative_elbo` (``likelihood="<name>"``) and the
training stack: each entry's decoder output, its per-example log-likelihood
of that output, its mean image, whether it is a density, whether sigma^2
enters.

This package needs only JAX and NumPy. Training VAEs is the subpackage
:mod:`vae_jax.train` (``pip install "vae_jax[train]"``: Flax, optax, orbax,
...; ``train_and_evaluate(config, workdir)``) and sweeps of many VAEs in one
compiled program are :mod:`vae_jax.sweep` (``run(config, workdir)``); neither
is imported here.
"""

__version__ = "0.1.0"

from vae_jax.checks import checked
from vae_jax.decoders import Decoder
from vae_jax.decoders import DECODERS
from vae_jax.divergences import diagonal_gaussian_log_density
from vae_jax.divergences import kl_monte_carlo
from vae_jax.divergences import kl_standard_normal
from vae_jax.divergences import kl_standard_normal_per_dim
from vae_jax.divergences import standard_normal_log_density
from vae_jax.likelihoods import bernoulli_log_likelihood
from vae_jax.likelihoods import bernoulli_log_likelihood_from_probs
from vae_jax.likelihoods import continuous_bernoulli_log_likelihood
from vae_jax.likelihoods import continuous_bernoulli_log_normalizer
from vae_jax.likelihoods import discretized_logistic_log_likelihood
from vae_jax.likelihoods import discretized_logistic_mixture_log_likelihood
from vae_jax.likelihoods import gaussian_log_likelihood
from vae_jax.likelihoods import laplace_log_likelihood
from vae_jax.likelihoods import optimal_sigma2
from vae_jax.likelihoods import optimal_sigma2_batch
from vae_jax.objectives import importance_weighted_bound
from vae_jax.objectives import iwae_objective
from vae_jax.objectives import iwae_objective_batch
from vae_jax.objectives import log_importance_weight
from vae_jax.objectives import multi_sample_elbo
from vae_jax.objectives import multi_sample_elbo_batch
from vae_jax.objectives import negative_elbo
from vae_jax.objectives import rate_and_distortion
from vae_jax.reductions import batched
from vae_jax.units import nats_to_bits_per_dim

__all__ = [
  "DECODERS",
  "Decoder",
  "batched",
  "bernoulli_log_likelihood",
  "bernoulli_log_likelihood_from_probs",
  "checked",
  "continuous_bernoulli_log_likelihood",
  "continuous_bernoulli_log_normalizer",
  "diagonal_gaussian_log_density",
  "discretized_logistic_log_likelihood",
  "discretized_logistic_mixture_log_likelihood",
  "gaussian_log_likelihood",
  "importance_weighted_bound",
  "iwae_objective",
  "iwae_objective_batch",
  "kl_monte_carlo",
  "kl_standard_normal",
  "kl_standard_normal_per_dim",
  "laplace_log_likelihood",
  "log_importance_weight",
  "multi_sample_elbo",
  "multi_sample_elbo_batch",
  "nats_to_bits_per_dim",
  "negative_elbo",
  "optimal_sigma2",
  "optimal_sigma2_batch",
  "rate_and_distortion",
  "standard_normal_log_density",
]
