"""ELBO and IWAE against a linear-Gaussian model whose log p(x) is known exactly."""

import math

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vae_jax
from tests import references


LinearGaussian = references.LinearGaussian


class ELBOTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_elbo_at_exact_posterior_equals_log_marginal(self):
    m = LinearGaussian()
    loss = self.variant(
      lambda *a: vae_jax.negative_elbo(
        *a, likelihood=vae_jax.gaussian_log_likelihood, sigma2=m.sigma2
      )
    )(m.x, m.decode(m.post_mean), m.post_mean, np.log(m.post_var))
    # E_q log p(x|z) = log N(x; W mu + b, s2) - tr(W^T W Sigma) / (2 s2).
    trace_term = np.sum(np.sum(m.w**2, axis=0) * m.post_var) / (2 * m.sigma2)
    np.testing.assert_allclose(-loss - trace_term, m.log_px, rtol=1e-12)

  @pytest.mark.slow
  def test_every_importance_weight_equals_log_marginal_at_exact_posterior(self):
    m = LinearGaussian(seed=1)
    zs = m.post_mean + np.sqrt(m.post_var) * np.random.default_rng(0).normal(
      size=(64, 3)
    )

    def log_weight(z):
      ll = vae_jax.gaussian_log_likelihood(m.x, m.decode(z), m.sigma2)
      return vae_jax.log_importance_weight(
        ll, z, m.post_mean, np.log(m.post_var)
      )

    log_w = jax.vmap(log_weight)(jnp.asarray(zs))
    np.testing.assert_allclose(log_w, np.full(64, m.log_px), rtol=1e-12)
    np.testing.assert_allclose(
      vae_jax.importance_weighted_bound(log_w), m.log_px, rtol=1e-12
    )

  @pytest.mark.slow
  def test_iwae_bound_tightens_with_k_below_log_marginal(self):
    m = LinearGaussian(seed=2)
    # An imperfect q: shifted by half a posterior std, 1.5x too wide.
    q_mean = m.post_mean + 0.5 * np.sqrt(m.post_var)
    q_log_var = np.log(1.5 * m.post_var)

    def bound(key, k):
      z = q_mean + np.exp(q_log_var / 2) * jax.random.normal(
        key, (k, 3), jnp.float64
      )
      ll = jax.vmap(
        lambda zi: vae_jax.gaussian_log_likelihood(
          m.x, m.w @ zi + m.b, m.sigma2
        )
      )(z)
      log_w = jax.vmap(vae_jax.log_importance_weight, (0, 0, None, None))(
        ll, z, q_mean, q_log_var
      )
      return vae_jax.importance_weighted_bound(log_w)

    keys = jax.random.split(jax.random.key(0), 400)
    means = {
      k: jax.vmap(lambda key: bound(key, k))(keys) for k in (1, 10, 1000)
    }
    averages = [float(jnp.mean(means[k])) for k in (1, 10, 1000)]
    self.assertLess(averages[0], averages[1])
    self.assertLess(averages[1], averages[2])
    standard_error = float(jnp.std(means[1000])) / math.sqrt(400)
    self.assertLess(averages[2], m.log_px + 3 * standard_error)
    self.assertLess(m.log_px - averages[2], 0.05)

  @parameterized.parameters(
    ("bernoulli", vae_jax.bernoulli_log_likelihood, {}),
    ("continuous_bernoulli", vae_jax.continuous_bernoulli_log_likelihood, {}),
    ("gaussian", vae_jax.gaussian_log_likelihood, dict(sigma2=0.3)),
  )
  @pytest.mark.slow
  def test_by_name_reads_the_registry_and_equals_the_hand_sum(
    self, name, fn, kwargs
  ):
    # Every registry entry takes logits; the Gaussian's mean is sigmoid(l).
    rng = np.random.default_rng(3)
    x, logits = rng.random(10), rng.normal(size=10)
    mean, log_var = rng.normal(size=4), rng.normal(size=4)
    by_name = vae_jax.negative_elbo(
      x, logits, mean, log_var, beta=2.5, likelihood=name, **kwargs
    )
    entry = vae_jax.DECODERS[name].log_likelihood
    by_entry = vae_jax.negative_elbo(
      x, logits, mean, log_var, beta=2.5, likelihood=entry, **kwargs
    )
    kl = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var)
    out = 1 / (1 + np.exp(-logits)) if name == "gaussian" else logits
    self.assertEqual(float(by_name), float(by_entry))
    np.testing.assert_allclose(
      by_name, -fn(x, out, **kwargs) + 2.5 * kl, rtol=1e-12
    )

  def test_an_unknown_name_lists_the_registry(self):
    with self.assertRaisesRegex(ValueError, "vae_jax.DECODERS"):
      vae_jax.negative_elbo(
        np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(2), likelihood="poisson"
      )

  def test_monte_carlo_rate_uses_the_sample(self):
    rng = np.random.default_rng(4)
    x, logits = (rng.random(10) < 0.5) * 1.0, rng.normal(size=10)
    mean, log_var, z = (
      rng.normal(size=3),
      rng.normal(size=3),
      rng.normal(size=3),
    )
    rate, distortion = vae_jax.rate_and_distortion(
      x, logits, mean, log_var, z=z
    )
    expected_rate = (
      stats.multivariate_normal.logpdf(z, mean, np.diag(np.exp(log_var)))
      - stats.norm.logpdf(z).sum()
    )
    np.testing.assert_allclose(rate, expected_rate, rtol=1e-12)
    np.testing.assert_allclose(
      distortion, -references.mp_bernoulli(x, logits), rtol=1e-12
    )

  def test_beta_is_traceable_for_sweeps(self):
    rng = np.random.default_rng(5)
    x, logits = rng.random(6), rng.normal(size=6)
    mean, log_var = rng.normal(size=2), rng.normal(size=2)
    betas = jnp.array([0.0, 1.0, 4.0])
    losses = jax.jit(
      jax.vmap(
        lambda b: vae_jax.negative_elbo(x, logits, mean, log_var, beta=b)
      )
    )(betas)
    rate, distortion = vae_jax.rate_and_distortion(x, logits, mean, log_var)
    np.testing.assert_allclose(losses, distortion + betas * rate, rtol=1e-13)


class IWAEBoundTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_brute_force_log_mean_exp(self):
    log_w = np.random.default_rng(6).normal(-50, 3, 5000)
    expected = np.log(np.mean(np.exp(log_w.astype(np.longdouble))))
    np.testing.assert_allclose(
      self.variant(vae_jax.importance_weighted_bound)(log_w),
      float(expected),
      rtol=1e-13,
    )

  @pytest.mark.slow
  def test_stable_where_naive_underflows(self):
    log_w = np.array([-1e4, -1e4 - 1.0, -1e4 - 50.0, -2e4])
    mp = references.mpmath
    expected = float(mp.log(sum(mp.exp(mp.mpf(w)) for w in log_w) / 4))
    for dtype in (np.float32, np.float64):
      got = vae_jax.importance_weighted_bound(log_w.astype(dtype))
      np.testing.assert_allclose(
        got, expected, rtol=1e-7 if dtype == np.float32 else 1e-14
      )

  @pytest.mark.slow
  def test_k_equals_one_is_the_weight_and_bound_lies_between_mean_and_max(self):
    self.assertEqual(
      float(vae_jax.importance_weighted_bound(np.array([-3.25]))), -3.25
    )
    log_w = np.random.default_rng(7).normal(size=100)
    bound = float(vae_jax.importance_weighted_bound(log_w))
    self.assertGreater(bound, log_w.mean())  # Jensen
    self.assertLess(bound, log_w.max())

  def test_rejects_a_batch(self):
    with self.assertRaisesRegex(
      ValueError, r"log_weights must have shape \[K\]"
    ):
      vae_jax.importance_weighted_bound(np.zeros((2, 3)))


class BatchingAndUnitsTest(chex.TestCase):
  @parameterized.parameters("mean", "sum", "none")
  @pytest.mark.slow
  def test_batched_equals_a_python_loop(self, reduction):
    rng = np.random.default_rng(8)
    x, logits = rng.random((5, 7)), rng.normal(size=(5, 7))
    loop = np.array(
      [
        float(vae_jax.continuous_bernoulli_log_likelihood(a, b))
        for a, b in zip(x, logits)
      ]
    )
    expected = {"mean": loop.mean(), "sum": loop.sum(), "none": loop}[reduction]
    got = vae_jax.batched(
      vae_jax.continuous_bernoulli_log_likelihood, reduction
    )(x, logits)
    np.testing.assert_allclose(got, expected, rtol=1e-13)

  @pytest.mark.slow
  def test_batched_keyword_arguments_are_shared(self):
    rng = np.random.default_rng(9)
    x, mean = rng.random((4, 3)), rng.random((4, 3))
    got = vae_jax.batched(vae_jax.gaussian_log_likelihood)(x, mean, sigma2=0.2)
    np.testing.assert_allclose(
      got, stats.norm.logpdf(x, mean, math.sqrt(0.2)).sum(1).mean(), rtol=1e-13
    )
    with self.assertRaisesRegex(ValueError, "reduction must be one of"):
      vae_jax.batched(vae_jax.gaussian_log_likelihood, "avg")

  def test_bits_per_dim(self):
    # 86.76 nats on 28x28 MNIST is 0.1597 bits/dim.
    np.testing.assert_allclose(
      vae_jax.nats_to_bits_per_dim(86.76, 784),
      86.76 / 784 / math.log(2),
      rtol=1e-15,
    )
    np.testing.assert_allclose(
      vae_jax.nats_to_bits_per_dim(np.array([math.log(2) * 784]), 784),
      [1.0],
      rtol=1e-15,
    )
    for bad in (0, -3, 2.5, True):
      with self.assertRaisesRegex(
        ValueError, "num_dims must be a positive int"
      ):
        vae_jax.nats_to_bits_per_dim(1.0, bad)
