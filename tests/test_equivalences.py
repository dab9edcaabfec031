"""The equivalences of the reference notes, checked numerically.

1. sum-BCE / B (PyTorch's ``reduction='sum'`` over a batch of B) is the batch
   mean of minus the Bernoulli log-likelihood.
2. sum-MSE / B is the batch mean of the Gaussian NLL at sigma2 = 1/2 minus its
   constant (D/2) log(2 pi sigma2) = (D/2) log(pi).
3. (1/(2 sigma2)) SSE + beta KL = (1/(2 sigma2)) [SSE + 2 sigma2 beta KL]: one
   is a positive multiple of the other, so they share minimisers and gradient
   directions.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from tests import references

B, D, LATENT = 16, 64, 4


def _batch(seed):
  rng = np.random.default_rng(seed)
  return rng.random((B, D)), rng.uniform(0.01, 0.99, (B, D))


class NotesEquivalenceTest(chex.TestCase):
  @pytest.mark.slow
  def test_bce_sum_over_batch_is_mean_negative_log_likelihood(self):
    x, probs = _batch(0)
    x[:8] = x[:8] > 0.5  # binary and soft targets both
    bce_sum_over_b = references.torch_bce_sum(probs, x) / B
    mean_nll = -vae_jax.batched(vae_jax.bernoulli_log_likelihood_from_probs)(
      x, probs
    )
    np.testing.assert_allclose(mean_nll, bce_sum_over_b, rtol=1e-13)
    logits = np.log(probs) - np.log1p(-probs)
    np.testing.assert_allclose(
      -vae_jax.batched(vae_jax.bernoulli_log_likelihood)(x, logits),
      bce_sum_over_b,
      rtol=1e-12,
    )

  @pytest.mark.slow
  def test_mse_sum_over_batch_is_gaussian_nll_at_half_minus_constant(self):
    x, mean = _batch(1)
    mse_sum_over_b = np.sum((mean - x) ** 2) / B
    nll = -vae_jax.batched(vae_jax.gaussian_log_likelihood)(x, mean, sigma2=0.5)
    np.testing.assert_allclose(
      nll - D / 2 * math.log(math.pi), mse_sum_over_b, rtol=1e-13
    )

  def test_pixel_mean_instead_of_sum_rescales_beta_by_d(self):
    # MSE averaged over pixels + beta KL == (SSE + D beta KL) / D.
    x, mean = _batch(2)
    kl = 1.7
    pixel_mean = np.mean((mean - x) ** 2, axis=1).mean() + 0.5 * kl
    summed = np.sum((mean - x) ** 2, axis=1).mean() + D * 0.5 * kl
    np.testing.assert_allclose(pixel_mean, summed / D, rtol=1e-14)


def _tiny_vae_objectives(sigma2, beta):
  """Two objectives of a linear VAE; params = (encoder W, decoder W)."""
  x, _ = _batch(3)
  eps = np.random.default_rng(4).normal(size=(B, LATENT))

  def terms(params):
    enc, dec = params
    stats = x @ enc
    mean, log_var = stats[:, :LATENT], stats[:, LATENT:]
    z = mean + jnp.exp(log_var / 2) * eps
    sse = jnp.sum((z @ dec - x) ** 2, axis=1)
    kl = jax.vmap(vae_jax.kl_standard_normal)(mean, log_var)
    gauss_nll = -jax.vmap(
      lambda a, b: vae_jax.gaussian_log_likelihood(a, b, sigma2)
    )(x, z @ dec)
    return sse, kl, gauss_nll

  def scaled(params):  # -ELBO with the Gaussian's constant dropped
    sse, kl, _ = terms(params)
    return jnp.mean(sse / (2 * sigma2) + beta * kl)

  def mse_form(params):
    sse, kl, _ = terms(params)
    return jnp.mean(sse + 2 * sigma2 * beta * kl)

  def library_form(params):  # the full Gaussian NLL, constant included
    _, kl, gauss_nll = terms(params)
    return jnp.mean(gauss_nll + beta * kl)

  rng = np.random.default_rng(5)
  params = (
    rng.normal(0, 0.1, (D, 2 * LATENT)),
    rng.normal(0, 0.1, (LATENT, D)),
  )
  return scaled, mse_form, library_form, params


class SigmaBetaTradeTest(chex.TestCase):
  @pytest.mark.slow
  def test_gradients_are_parallel_with_factor_one_over_two_sigma2(self):
    for sigma2, beta in ((0.1, 1.0), (0.5, 4.0), (2.0, 0.25)):
      scaled, mse_form, library_form, params = _tiny_vae_objectives(
        sigma2, beta
      )
      g_scaled = jax.grad(scaled)(params)
      g_mse = jax.grad(mse_form)(params)
      g_lib = jax.grad(library_form)(params)
      for a, b, c in zip(g_scaled, g_mse, g_lib):
        np.testing.assert_allclose(a, b / (2 * sigma2), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)
      # The library's NLL differs from the scaled form by the constant only.
      np.testing.assert_allclose(
        library_form(params) - scaled(params),
        D / 2 * math.log(2 * math.pi * sigma2),
        rtol=1e-12,
      )

  @pytest.mark.slow
  def test_same_minimiser_by_gradient_descent(self):
    sigma2, beta = 0.25, 2.0
    scaled, mse_form, _, params = _tiny_vae_objectives(sigma2, beta)

    def descend(loss, lr, steps=200):
      step = lambda p, _: (
        jax.tree.map(lambda w, g: w - lr * g, p, jax.grad(loss)(p)),
        None,
      )
      return jax.lax.scan(step, params, length=steps)[0]

    # Gradient descent on the MSE form with its step divided by 2 sigma2
    # follows the same path to the same minimiser.
    a = descend(scaled, 2e-3)
    b = descend(mse_form, 2e-3 / (2 * sigma2))
    for wa, wb in zip(a, b):
      np.testing.assert_allclose(wa, wb, rtol=1e-9, atol=1e-12)
    self.assertLess(float(scaled(a)), 0.5 * float(scaled(params)))
