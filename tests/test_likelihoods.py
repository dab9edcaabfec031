"""Likelihood values against scipy, mpmath and closed forms; with and without jit."""

import math

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
from jax import test_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import vae_jax
from tests import references

RTOL = {np.float32: 2e-5, np.float64: 1e-12}
SHAPES = [(3,), (784,), (28, 28, 1)]


def _rng(seed=0):
  return np.random.default_rng(seed)


class BernoulliTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(shape=SHAPES, dtype=[np.float32, np.float64])
  @pytest.mark.slow
  def test_matches_scipy_logpmf_on_binary_data(self, shape, dtype):
    rng = _rng()
    x = (rng.random(shape) < 0.3).astype(dtype)
    logits = rng.normal(0, 3, shape).astype(dtype)
    expected = stats.bernoulli.logpmf(
      x, 1 / (1 + np.exp(-logits.astype(np.float64)))
    ).sum()
    got = self.variant(vae_jax.bernoulli_log_likelihood)(x, logits)
    self.assertEqual(got.dtype, dtype)
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype])

  @parameterized.parameters(np.float32, np.float64)
  @pytest.mark.slow
  def test_gradients_match_the_two_log_sigmoids(self, dtype):
    # The hand-written derivatives (one shared exp) against autodiff of the
    # textbook form x log sigmoid(l) + (1 - x) log sigmoid(-l), for soft
    # and hard x, in l and in x, at moderate logits where that form is exact.
    rng = _rng(7)
    x = np.concatenate([rng.random(40), [0.0, 1.0] * 5]).astype(dtype)
    logits = rng.normal(0, 4, 50).astype(dtype)

    def textbook(x, l):
      return jnp.sum(
        x * jax.nn.log_sigmoid(l) + (1 - x) * jax.nn.log_sigmoid(-l)
      )

    ours = jax.grad(vae_jax.bernoulli_log_likelihood, (0, 1))(x, logits)
    reference = jax.grad(textbook, (0, 1))(x, logits)
    for got, want in zip(ours, reference):
      np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=1e-6)
    # d/dx is exactly the logit (log sigmoid(l) - log sigmoid(-l) = l).
    np.testing.assert_allclose(ours[0], logits, rtol=RTOL[dtype])

  @pytest.mark.slow
  def test_second_derivatives_match_finite_differences(self):
    # The JVP rule is itself differentiable (Hessians, Laplace, natural
    # gradients): checked against central differences in float64.
    rng = _rng(8)
    x, logits = rng.random(6), rng.normal(0, 2, 6)
    test_util.check_grads(
      vae_jax.bernoulli_log_likelihood,
      (x, logits),
      order=2,
      modes=("fwd", "rev"),
      atol=1e-6,
      rtol=1e-6,
    )
    # d2/dl2 = -sigmoid(l) sigmoid(-l), elementwise.
    hessian = jax.hessian(vae_jax.bernoulli_log_likelihood, 1)(x, logits)
    sig = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(
      hessian, np.diag(-sig * (1 - sig)), rtol=1e-12, atol=1e-15
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  def test_soft_targets_are_minus_cross_entropy(self, dtype):
    rng = _rng(1)
    x = rng.random(50).astype(dtype)
    p = rng.uniform(0.01, 0.99, 50)
    logits = np.log(p / (1 - p)).astype(dtype)
    expected = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p))
    got = self.variant(vae_jax.bernoulli_log_likelihood)(x, logits)
    np.testing.assert_allclose(got, expected, rtol=10 * RTOL[dtype])

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    logit=[1e3, -1e3, 104.0, -104.0, 20.0, -20.0, 0.0],
    x=[0.0, 0.5, 1.0],
    dtype=[np.float32, np.float64],
  )
  @pytest.mark.slow
  def test_extreme_logits_match_mpmath(self, logit, x, dtype):
    xs, ls = np.full(2, x, dtype), np.full(2, logit, dtype)
    fn = self.variant(jax.value_and_grad(vae_jax.bernoulli_log_likelihood, 1))
    value, grad = fn(xs, ls)
    np.testing.assert_allclose(
      value, references.mp_bernoulli(xs, ls), rtol=RTOL[dtype], atol=1e-30
    )
    # d/dl = x - sigmoid(l) = x sigmoid(-l) - (1 - x) sigmoid(l), at 50 digits.
    sig = lambda v: float(references.mpmath.exp(references.mp_log_sigmoid(v)))
    expected = x * sig(-float(ls[0])) - (1 - x) * sig(float(ls[0]))
    np.testing.assert_allclose(
      grad, [expected] * 2, rtol=RTOL[dtype], atol=1e-30
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(shape=SHAPES, dtype=[np.float32, np.float64])
  @pytest.mark.slow
  def test_from_probs_matches_torch_formula(self, shape, dtype):
    rng = _rng(2)
    x = rng.random(shape).astype(dtype)
    probs = rng.random(shape).astype(dtype)
    probs.flat[:2] = [0.0, 1.0]  # both clamps at -100
    got = self.variant(vae_jax.bernoulli_log_likelihood_from_probs)(x, probs)
    np.testing.assert_allclose(
      got, -references.torch_bce_sum(probs, x), rtol=RTOL[dtype]
    )

  @parameterized.parameters(np.float32, np.float64)
  @pytest.mark.slow
  def test_from_probs_gradient_finite_at_zero_and_one(self, dtype):
    x = np.array([0.0, 1.0, 1.0, 0.0, 0.5], dtype)
    probs = np.array([0.0, 0.0, 1.0, 1.0, 0.5], dtype)
    grad = jax.grad(vae_jax.bernoulli_log_likelihood_from_probs, 1)(x, probs)
    # Clamped logs have zero slope; unclamped ones x/p - (1-x)/(1-p).
    np.testing.assert_allclose(grad, [-1.0, 0.0, 1.0, 0.0, 0.0], atol=1e-6)

  @parameterized.parameters(np.float32, np.float64)
  @pytest.mark.slow
  def test_from_probs_small_p_is_exact(self, dtype):
    # (1 - x) log(1 - p) ~ -p: log1p keeps it where log(1 - p) rounds to 0.
    for p in (1e-6, 1e-10, 1e-17, 1e-30):
      got = vae_jax.bernoulli_log_likelihood_from_probs(
        np.zeros(1, dtype), np.full(1, p, dtype)
      )
      expected = references.mpmath.log1p(
        -references.mpmath.mpf(float(dtype(p)))
      )
      np.testing.assert_allclose(got, float(expected), rtol=RTOL[dtype])

  @pytest.mark.slow
  def test_from_probs_equals_logit_form_inside_the_clamp(self):
    rng = _rng(3)
    x = rng.random(100)
    logits = rng.normal(0, 5, 100)
    probs = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(
      vae_jax.bernoulli_log_likelihood_from_probs(x, probs),
      vae_jax.bernoulli_log_likelihood(x, logits),
      rtol=1e-12,
    )


class GaussianTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
    shape=SHAPES, dtype=[np.float32, np.float64], sigma2=[1e-4, 0.5, 1.0, 7.0]
  )
  @pytest.mark.slow
  def test_matches_scipy_norm_logpdf(self, shape, dtype, sigma2):
    rng = _rng(4)
    x = rng.random(shape).astype(dtype)
    mean = rng.random(shape).astype(dtype)
    expected = stats.norm.logpdf(x, mean, math.sqrt(sigma2)).sum()
    got = self.variant(vae_jax.gaussian_log_likelihood)(x, mean, sigma2)
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype])

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((28, 28, 1), (1, 1, 1), (28, 1, 1), (1,))
  @pytest.mark.slow
  def test_per_pixel_sigma2_broadcasts(self, *sigma2_shape):
    rng = _rng(5)
    x = rng.random((28, 28, 1))
    mean = rng.random((28, 28, 1))
    sigma2 = rng.uniform(0.1, 2, sigma2_shape)
    expected = stats.norm.logpdf(x, mean, np.sqrt(sigma2)).sum()
    got = self.variant(vae_jax.gaussian_log_likelihood)(x, mean, sigma2)
    np.testing.assert_allclose(got, expected, rtol=1e-12)

  def test_constant_is_kept(self):
    x = np.zeros(784)
    # At x = mean only -(D/2) log(2 pi sigma2) remains.
    for sigma2 in (0.01, 0.5, 3.0):
      np.testing.assert_allclose(
        vae_jax.gaussian_log_likelihood(x, x, sigma2),
        -392 * math.log(2 * math.pi * sigma2),
        rtol=1e-13,
      )

  @hypothesis.given(st.integers(0, 2**31 - 1), st.floats(1e-3, 1e2))
  @pytest.mark.slow
  def test_maximised_at_x_equals_mean(self, seed, sigma2):
    rng = _rng(seed)
    mean = rng.normal(size=10)
    x = mean + rng.normal(size=10)
    at_mean = vae_jax.gaussian_log_likelihood(mean, mean, sigma2)
    elsewhere = vae_jax.gaussian_log_likelihood(x, mean, sigma2)
    self.assertGreater(float(at_mean), float(elsewhere))
    self.assertEqual(
      float(
        jnp.max(
          jnp.abs(jax.grad(vae_jax.gaussian_log_likelihood)(mean, mean, sigma2))
        )
      ),
      0.0,
    )


class OptimalSigma2Test(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_equals_mse(self):
    rng = _rng(6)
    x, mean = rng.random((8, 28, 28)), rng.random((8, 28, 28))
    per_example = jax.vmap(self.variant(vae_jax.optimal_sigma2))(x, mean)
    np.testing.assert_allclose(
      per_example, ((x - mean) ** 2).mean(axis=(1, 2)), rtol=1e-13
    )
    np.testing.assert_allclose(
      self.variant(vae_jax.optimal_sigma2_batch)(x, mean),
      ((x - mean) ** 2).mean(),
      rtol=1e-13,
    )

  @hypothesis.given(st.integers(0, 2**31 - 1), st.floats(0.2, 5.0))
  @pytest.mark.slow
  def test_maximises_the_likelihood_over_sigma2(self, seed, factor):
    hypothesis.assume(abs(factor - 1) > 1e-3)
    rng = _rng(seed)
    x, mean = rng.random(20), rng.random(20)
    best = vae_jax.optimal_sigma2(x, mean)
    ll = lambda s2: vae_jax.gaussian_log_likelihood(x, mean, s2)
    self.assertGreater(float(ll(best)), float(ll(best * factor)))
    self.assertAlmostEqual(float(jax.grad(ll)(best)), 0.0, places=6)

  @pytest.mark.slow
  def test_batch_value_maximises_the_batch_likelihood(self):
    rng = _rng(7)
    x, mean = rng.random((5, 30)), rng.random((5, 30))
    total = lambda s2: jnp.sum(
      jax.vmap(lambda a, b: vae_jax.gaussian_log_likelihood(a, b, s2))(x, mean)
    )
    best = vae_jax.optimal_sigma2_batch(x, mean)
    self.assertAlmostEqual(float(jax.grad(total)(best)), 0.0, places=6)


class ContinuousBernoulliTest(chex.TestCase):
  # Branch edges: 0.1 (float64 series), 0.8 (float32 series), 12 (asymptote).
  @parameterized.parameters(
    -30.0,
    -5.0,
    -0.7,
    -0.1,
    -0.05,
    0.0,
    1e-6,
    0.0999,
    0.1,
    0.1001,
    0.4,
    0.7999,
    0.8,
    0.8001,
    2.0,
    11.99,
    12.0,
    12.01,
    40.0,
  )
  def test_log_normalizer_matches_quadrature(self, logit):
    expected = float(references.mp_cb_log_normalizer(logit))
    got = vae_jax.continuous_bernoulli_log_normalizer(jnp.float64(logit))
    np.testing.assert_allclose(got, expected, rtol=2e-15)
    got32 = vae_jax.continuous_bernoulli_log_normalizer(jnp.float32(logit))
    # float32: ~5 ulp from tanh, division and log (benchmarks/ACCURACY.md).
    np.testing.assert_allclose(got32, expected, rtol=6e-7)

  @parameterized.parameters(1e3, -1e3, 1e6, 88.0)
  @pytest.mark.slow
  def test_log_normalizer_asymptote(self, logit):
    # C(l) = l / (2 sigmoid(l) - 1) -> |l| for large |l|.
    for dtype in (np.float32, np.float64):
      got = vae_jax.continuous_bernoulli_log_normalizer(dtype(logit))
      np.testing.assert_allclose(got, math.log(abs(logit)), rtol=1e-7)

  @parameterized.parameters(
    0.0,
    1e-4,
    0.05,
    0.0999,
    0.1001,
    0.5,
    0.7999,
    0.8001,
    3.0,
    11.99,
    12.01,
    30.0,
  )
  @pytest.mark.slow
  def test_log_normalizer_gradient(self, logit):
    # d/dl log(l / tanh(l / 2)) = 1/l - 1/sinh(l), at 50 digits.
    mp_l = references.mpmath.mpf(logit)
    expected = (
      float(1 / mp_l - 1 / references.mpmath.sinh(mp_l)) if logit else 0.0
    )
    for logit_signed in (logit, -logit):
      grad = jax.grad(vae_jax.continuous_bernoulli_log_normalizer)
      # The closed form's slope cancels as 12 eps / l^2 just above the series.
      np.testing.assert_allclose(
        grad(jnp.float64(logit_signed)),
        math.copysign(expected, logit_signed),
        rtol=2e-13,
        atol=1e-16,
      )
      np.testing.assert_allclose(
        grad(jnp.float32(logit_signed)),
        math.copysign(expected, logit_signed),
        rtol=3e-6,
        atol=1e-9,
      )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(np.float32, np.float64)
  @pytest.mark.slow
  def test_density_matches_quadrature_normaliser(self, dtype):
    rng = _rng(8)
    x = rng.random(20).astype(dtype)
    logits = rng.normal(0, 4, 20).astype(dtype)
    logits[:2] = [0.0, 1e-3]
    expected = references.mp_bernoulli(x, logits) + sum(
      float(references.mp_cb_log_normalizer(l)) for l in logits
    )
    got = self.variant(vae_jax.continuous_bernoulli_log_likelihood)(x, logits)
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype])

  @parameterized.parameters(-20.0, -1.0, 0.0, 0.03, 2.5, 15.0)
  @pytest.mark.slow
  def test_integrates_to_one(self, logit):
    density = lambda t: math.exp(
      vae_jax.continuous_bernoulli_log_likelihood(
        np.array([t]), np.array([logit])
      )
    )
    total, _ = integrate.quad(density, 0, 1, epsabs=1e-13, epsrel=1e-12)
    self.assertAlmostEqual(total, 1.0, places=10)

  @parameterized.parameters(np.float32, np.float64)
  @pytest.mark.slow
  def test_finite_at_extreme_logits(self, dtype):
    x = np.array([0.0, 1.0, 0.5, 0.0, 1.0], dtype)
    logits = np.array([1e3, 1e3, -1e3, -1e3, 0.0], dtype)
    value, grad = jax.value_and_grad(
      vae_jax.continuous_bernoulli_log_likelihood, 1
    )(x, logits)
    expected = (
      references.mp_bernoulli(x, logits) + 4 * math.log(1e3) + math.log(2)
    )
    np.testing.assert_allclose(value, expected, rtol=RTOL[dtype])
    # d/dl = x - sigmoid(l) + 1/l - 1/sinh(l) -> x - sigmoid(l) + 1/l.
    np.testing.assert_allclose(
      grad, [-1 + 1e-3, 1e-3, 0.5 - 1e-3, -1e-3, 0.5], rtol=RTOL[dtype]
    )
