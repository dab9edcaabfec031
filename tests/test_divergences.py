"""KL and latent log-densities against scipy and numerical integration."""

import math

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import vae_jax
from tests import references

RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def _posterior(seed, n=20, dtype=np.float64):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(0, 1.5, n).astype(dtype),
    rng.normal(0, 2, n).astype(dtype),
  )


def _kl_by_quadrature(m, v):
  """KL(N(m, e^v) || N(0, 1)) = int q log(q / p), integrated numerically."""
  q = stats.norm(m, math.exp(v / 2))
  p = stats.norm(0, 1)
  f = lambda z: math.exp(q.logpdf(z)) * (q.logpdf(z) - p.logpdf(z))
  s = math.exp(v / 2)
  return integrate.quad(
    f, m - 40 * s, m + 40 * s, epsabs=1e-14, epsrel=1e-12, limit=200
  )[0]


class KLTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  @pytest.mark.slow
  def test_matches_numerical_integration(self, dtype):
    mean, log_variance = _posterior(0, n=8, dtype=dtype)
    expected = sum(
      _kl_by_quadrature(float(m), float(v)) for m, v in zip(mean, log_variance)
    )
    got = self.variant(vae_jax.kl_standard_normal)(mean, log_variance)
    np.testing.assert_allclose(got, expected, rtol=max(RTOL[dtype], 1e-9))

  @pytest.mark.slow
  def test_per_dim_sums_to_total(self):
    mean, log_variance = _posterior(1)
    np.testing.assert_allclose(
      jnp.sum(vae_jax.kl_standard_normal_per_dim(mean, log_variance)),
      vae_jax.kl_standard_normal(mean, log_variance),
      rtol=1e-14,
    )

  @parameterized.parameters(1e-8, -1e-8, 1e-4, -3e-3, 0.4999, 0.5, -0.5001, 2.0)
  @pytest.mark.slow
  def test_accurate_for_nearly_unit_variance(self, log_variance):
    # exp(v) - 1 - v = v^2/2 + ...: the naive form loses every digit here.
    v = references.mpmath.mpf(log_variance)
    expected = float((references.mpmath.exp(v) - 1 - v) / 2)
    got = vae_jax.kl_standard_normal(np.zeros(1), np.full(1, log_variance))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got32 = vae_jax.kl_standard_normal(
      np.zeros(1, np.float32), np.full(1, log_variance, np.float32)
    )
    np.testing.assert_allclose(got32, expected, rtol=1e-5)

  @hypothesis.given(
    st.lists(
      st.tuples(st.floats(-10, 10), st.floats(-15, 15)), min_size=1, max_size=12
    )
  )
  @pytest.mark.slow
  def test_non_negative_and_zero_only_at_prior(self, params):
    mean, log_variance = (np.array(a) for a in zip(*params))
    kl = float(vae_jax.kl_standard_normal(mean, log_variance))
    self.assertGreaterEqual(kl, 0.0)
    # KL ~ (m^2 + v^2/2)/2 underflows below ~1e-154.
    if np.any(np.abs(mean) > 1e-150) or np.any(np.abs(log_variance) > 1e-150):
      self.assertGreater(kl, 0.0)
    self.assertEqual(float(vae_jax.kl_standard_normal(0 * mean, 0 * mean)), 0.0)


class DensityTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  @pytest.mark.slow
  def test_diagonal_gaussian_matches_scipy(self, dtype):
    mean, log_variance = _posterior(2, dtype=dtype)
    z = np.random.default_rng(3).normal(size=20).astype(dtype)
    expected = stats.multivariate_normal.logpdf(
      z,
      mean.astype(np.float64),
      np.diag(np.exp(log_variance.astype(np.float64))),
    )
    got = self.variant(vae_jax.diagonal_gaussian_log_density)(
      z, mean, log_variance
    )
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype])

  @chex.variants(with_jit=True, without_jit=True)
  def test_standard_normal_matches_scipy(self):
    z = np.random.default_rng(4).normal(size=(4, 5))
    np.testing.assert_allclose(
      self.variant(vae_jax.standard_normal_log_density)(z),
      stats.norm.logpdf(z).sum(),
      rtol=1e-13,
    )

  @pytest.mark.slow
  def test_monte_carlo_kl_is_the_log_ratio_and_converges(self):
    mean, log_variance = _posterior(5, n=6)
    eps = jax.random.normal(jax.random.key(0), (200_000, 6), jnp.float64)
    z = mean + jnp.exp(log_variance / 2) * eps
    samples = jax.vmap(vae_jax.kl_monte_carlo, (0, None, None))(
      z, mean, log_variance
    )
    np.testing.assert_allclose(
      samples[0],
      stats.multivariate_normal.logpdf(
        z[0], mean, np.diag(np.exp(log_variance))
      )
      - stats.norm.logpdf(z[0]).sum(),
      rtol=1e-12,
    )
    exact = float(vae_jax.kl_standard_normal(mean, log_variance))
    standard_error = float(jnp.std(samples)) / math.sqrt(len(samples))
    self.assertLess(abs(float(jnp.mean(samples)) - exact), 5 * standard_error)
