"""Evaluation against a linear-Gaussian VAE whose log p(x) is known exactly."""

import functools
import json
import math
import re

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

import vae_jax
from vae_jax.train import evaluation

# The wrong posterior: mean shifted by half a posterior std, variance 1.5x.
_SHIFT, _VARIANCE_RATIO = 0.5, 1.5


class LinearGaussianVAE:
  """p(z) = N(0, I_L), p(x | z) = N(W z + b, s2 I_D), with W^T W diagonal so
  that the exact posterior N(v W^T (x - b) / s2, v), v = 1 / (1 + diag(W^T W) / s2),
  is a diagonal Gaussian. ``x`` holds examples drawn from the model."""

  def __init__(
    self,
    seed=0,
    num_examples=16,
    data_dim=12,
    latent_dim=3,
    sigma2=0.3,
    dtype=np.float64,
  ):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(data_dim, latent_dim)))
    self.w = (q * rng.uniform(0.5, 3.0, latent_dim)).astype(dtype)
    self.b = rng.normal(size=data_dim).astype(dtype)
    self.sigma2 = sigma2
    z = rng.normal(size=(num_examples, latent_dim))
    noise = math.sqrt(sigma2) * rng.normal(size=(num_examples, data_dim))
    self.x = (z @ self.w.T + self.b + noise).astype(dtype)
    w, b = self.w.astype(np.float64), self.b.astype(np.float64)
    self.log_px = stats.multivariate_normal.logpdf(
      self.x, b, w @ w.T + sigma2 * np.eye(data_dim)
    )
    self.post_var = 1 / (1 + np.sum(w**2, axis=0) / sigma2)
    self.post_mean = self.post_var * ((self.x - b) @ w) / sigma2
    self.wrong_mean = self.post_mean + _SHIFT * np.sqrt(self.post_var)
    self.wrong_var = _VARIANCE_RATIO * self.post_var

  def encode_exact(self, x):
    mean = (x - self.b) @ self.w * (self.post_var / self.sigma2).astype(x.dtype)
    return mean, jnp.broadcast_to(
      np.log(self.post_var).astype(x.dtype), mean.shape
    )

  def encode_wrong(self, x):
    mean, log_var = self.encode_exact(x)
    shift = (_SHIFT * np.sqrt(self.post_var)).astype(x.dtype)
    return mean + shift, log_var + np.asarray(
      math.log(_VARIANCE_RATIO), x.dtype
    )

  def log_likelihood(self, x, z):
    return vae_jax.gaussian_log_likelihood(x, self.w @ z + self.b, self.sigma2)

  def np_log_likelihood(self, x, z):
    return stats.norm.logpdf(
      x, self.w @ z + self.b, math.sqrt(self.sigma2)
    ).sum()


def reference_noise(key, row, sample, latent_dim, dtype=np.float64):
  """The documented noise of sample ``sample`` of row ``row``."""
  key = jax.random.fold_in(jax.random.fold_in(key, row), sample)
  return np.asarray(jax.random.normal(key, (latent_dim,), dtype))


def chi2_plus_one_per_dim(shift, variance_ratio):
  """E_q[(p / q)^2] for p = N(0, 1), q = N(shift, ratio), integrated in closed form."""
  r = variance_ratio
  return r / math.sqrt(2 * r - 1) * math.exp(shift**2 / (2 * r - 1))


def iwae(
  model, encode, num_samples, chunk_size, key=jax.random.key(0), jit=True
):
  fn = functools.partial(
    evaluation.iwae_log_likelihood,
    encode,
    model.log_likelihood,
    num_samples=num_samples,
    chunk_size=chunk_size,
  )
  return np.asarray((jax.jit(fn) if jit else fn)(model.x, key))


def elbo_terms(model, encode, key):
  fn = functools.partial(evaluation.elbo_terms, encode, model.log_likelihood)
  return jax.tree.map(np.asarray, jax.jit(fn)(model.x, key))


class ExactPosteriorTest(absltest.TestCase):
  @pytest.mark.slow
  def test_iwae_equals_log_marginal_for_any_k(self):
    # Every weight p(x, z) / p(z | x) equals p(x). (K = 3: the evaluate tests.)
    m = LinearGaussianVAE()
    np.testing.assert_allclose(
      iwae(m, m.encode_exact, 33, 8), m.log_px, rtol=1e-12
    )

  @pytest.mark.slow
  def test_elbo_equals_log_marginal_in_expectation(self):
    m = LinearGaussianVAE(num_examples=400)
    terms = elbo_terms(m, m.encode_exact, jax.random.key(1))
    # KL(N(mu, Sigma) || N(0, I)) = (tr Sigma + |mu|^2 - L - log det Sigma) / 2.
    kl = 0.5 * (
      np.sum(m.post_var)
      + np.sum(m.post_mean**2, axis=1)
      - m.post_var.size
      - np.sum(np.log(m.post_var))
    )
    np.testing.assert_allclose(terms["rate"], kl, rtol=1e-12)
    np.testing.assert_allclose(terms["mean"], m.post_mean, rtol=1e-12)
    np.testing.assert_allclose(
      np.sum(terms["kl_per_dim"], axis=1), kl, rtol=1e-12
    )
    # E_q[-log p(x|z)] = -log N(x; W mu + b, s2) + tr(W^T W Sigma) / (2 s2).
    decoded = m.post_mean @ m.w.T + m.b
    expected_distortion = -stats.norm.logpdf(
      m.x, decoded, math.sqrt(m.sigma2)
    ).sum(1) + np.sum(np.sum(m.w**2, axis=0) * m.post_var) / (2 * m.sigma2)
    np.testing.assert_allclose(
      -(expected_distortion + kl), m.log_px, rtol=1e-12
    )
    # One sample per example: exact only on average.
    gap = np.asarray(terms["elbo"]) - m.log_px
    self.assertLess(abs(gap.mean()), 4 * gap.std() / math.sqrt(len(gap)))


class WrongPosteriorTest(absltest.TestCase):
  @pytest.mark.slow
  def test_against_a_loop_over_explicit_weights(self):
    m = LinearGaussianVAE(num_examples=3)
    key = jax.random.key(7)
    got = iwae(
      m, m.encode_wrong, 7, 3, key
    )  # 7 = 2 * 3 + 1: a masked remainder
    terms = elbo_terms(m, m.encode_wrong, key)
    std = np.sqrt(m.wrong_var)
    for row in range(3):
      log_w = []
      for sample in range(7):
        z = m.wrong_mean[row] + std * reference_noise(key, row, sample, 3)
        log_w.append(
          m.np_log_likelihood(m.x[row], z)
          + stats.norm.logpdf(z).sum()
          - stats.norm.logpdf(z, m.wrong_mean[row], std).sum()
        )
        if sample == 0:  # the ELBO's sample
          np.testing.assert_allclose(
            terms["distortion"][row],
            -m.np_log_likelihood(m.x[row], z),
            rtol=1e-12,
          )
      np.testing.assert_allclose(
        got[row], special.logsumexp(log_w) - math.log(7), rtol=1e-12
      )

  @pytest.mark.slow
  def test_bounds_tighten_with_k_towards_log_marginal(self):
    n = 800
    m = LinearGaussianVAE(num_examples=n)
    elbo = elbo_terms(m, m.encode_wrong, jax.random.key(0))["elbo"]
    gaps = {
      k: iwae(m, m.encode_wrong, k, 1000) - m.log_px for k in (1, 10, 5000)
    }
    standard_error = lambda v: v.std() / math.sqrt(n)

    def assert_tighter(looser, tighter):  # by > 3 standard errors, paired
      gain = tighter - looser
      self.assertGreater(gain.mean(), 3 * standard_error(gain))

    # E[ELBO] = E[IWAE_1] = log p(x) - KL(q || p(z|x)) = log p(x) - 0.52 here;
    # IWAE_10 gains ~0.45 nats (6 SE), IWAE_5000 another ~0.04 (4 SE).
    assert_tighter(elbo - m.log_px, gaps[10])
    assert_tighter(gaps[1], gaps[10])
    assert_tighter(gaps[10], gaps[5000])
    for gap in gaps.values():
      self.assertLess(gap.mean(), 3 * standard_error(gap))
    # Delta method: IWAE_K ~ log p(x) - chi2 / (2K) with std sqrt(chi2 / K) per
    # example, chi2 = E_q[(p(z|x) / q)^2] - 1 in closed form (0.74 here).
    chi2 = chi2_plus_one_per_dim(_SHIFT, _VARIANCE_RATIO) ** 3 - 1
    tolerance = chi2 / (2 * 5000) + 4 * math.sqrt(
      chi2 / 5000 / n
    )  # ~0.002 nats
    self.assertLess(abs(gaps[5000].mean()), tolerance)

  def test_memory_is_bounded_by_the_chunk_not_by_k(self):
    m = LinearGaussianVAE(num_examples=2)
    fn = functools.partial(
      evaluation.iwae_log_likelihood,
      m.encode_wrong,
      m.log_likelihood,
      num_samples=5000,
      chunk_size=10,
    )
    jaxpr = str(jax.make_jaxpr(fn)(m.x, jax.random.key(0)))
    sizes = [
      math.prod(int(d) for d in dims.split(",") if d)
      for dims in re.findall(r"\bf\d+\[([\d,]*)\]", jaxpr)
    ]
    self.assertEqual(max(sizes), 2 * 10 * 12)  # [B, chunk, D]: decoded means

  @pytest.mark.slow
  def test_chunk_size_does_not_change_the_estimate(self):
    m = LinearGaussianVAE(dtype=np.float32)
    expected = iwae(m, m.encode_wrong, 50, 64)  # 64 > K: one chunk
    self.assertEqual(expected.dtype, np.float32)
    np.testing.assert_allclose(
      iwae(m, m.encode_wrong, 50, 1), expected, rtol=1e-5
    )
    # 50 = 7 * 7 + 1, and without jit.
    np.testing.assert_allclose(
      iwae(m, m.encode_wrong, 50, 7, jit=False), expected, rtol=1e-5
    )


class IWAEEdgeCasesTest(absltest.TestCase):
  @pytest.mark.slow
  def test_all_zero_weights_give_minus_infinity_not_nan(self):
    m = LinearGaussianVAE(num_examples=2)
    log_likelihood = lambda x, z: jnp.sum(z) * 0 - jnp.inf
    fn = jax.jit(
      functools.partial(
        evaluation.iwae_log_likelihood,
        m.encode_wrong,
        log_likelihood,
        num_samples=5,
        chunk_size=2,
      )
    )
    np.testing.assert_array_equal(
      fn(m.x, jax.random.key(0)), [-np.inf, -np.inf]
    )

  def test_bad_arguments_are_named(self):
    m = LinearGaussianVAE(num_examples=2)
    call = functools.partial(
      evaluation.iwae_log_likelihood,
      m.encode_wrong,
      m.log_likelihood,
      m.x,
      jax.random.key(0),
    )
    with self.assertRaisesRegex(
      ValueError, "num_samples must be a positive int"
    ):
      call(num_samples=0, chunk_size=1)
    with self.assertRaisesRegex(
      ValueError, "chunk_size must be a positive int"
    ):
      call(num_samples=4, chunk_size=True)
    with self.assertRaisesRegex(
      ValueError, r"encode must return a mean of shape"
    ):
      evaluation.iwae_log_likelihood(
        lambda x: (x[0], x[0]),
        m.log_likelihood,
        m.x,
        jax.random.key(0),
        num_samples=2,
        chunk_size=1,
      )
    with self.assertRaisesRegex(
      ValueError, "batch_size must be a positive int"
    ):
      evaluation.evaluate(
        m.encode_wrong,
        m.log_likelihood,
        m.x,
        jax.random.key(0),
        num_samples=2,
        chunk_size=1,
        batch_size=0,
        num_dims=12,
      )


class ActiveUnitsTest(absltest.TestCase):
  def test_against_numpy_variance(self):
    means = np.array(
      [
        [2.0, 0.05, 0.11, 1.0, 0.0],
        [2.0, -0.05, -0.11, -2.0, 0.0],
        [2.0, 0.05, 0.11, 0.5, 0.0],
        [2.0, -0.05, -0.11, 3.0, 0.0],
        [2.0, 0.05, 0.11, -1.5, 0.0],
        [2.0, -0.05, -0.11, 0.0, 1.0],
      ],
      np.float32,
    )
    count, variance = evaluation.active_units(means)
    np.testing.assert_allclose(
      variance, np.var(means.astype(np.float64), axis=0), rtol=1e-12
    )
    # Constant, 0.0025 and 0.0121 (either side of 0.01), large, 5/36.
    np.testing.assert_allclose(
      variance[[0, 1, 2, 4]], [0, 0.0025, 0.0121, 5 / 36], rtol=1e-6, atol=1e-12
    )
    self.assertEqual(count, 3)
    self.assertIsInstance(count, int)
    self.assertEqual(evaluation.active_units(means, threshold=0.2)[0], 1)


class EvaluateTest(absltest.TestCase):
  @pytest.mark.slow
  def test_equals_the_per_batch_functions_for_any_batch_size(self):
    m = LinearGaussianVAE(num_examples=10, dtype=np.float32)
    key = jax.random.key(3)
    terms = elbo_terms(m, m.encode_wrong, key)
    log_px = iwae(m, m.encode_wrong, 20, 8, key)
    for batch_size in (
      3,
      32,
    ):  # 3 + 3 + 3 + 1 rows; one batch of N < batch_size
      got = evaluation.evaluate(
        m.encode_wrong,
        m.log_likelihood,
        m.x,
        key,
        num_samples=20,
        chunk_size=8,
        batch_size=batch_size,
        num_dims=12,
      )
      for name in ("elbo", "rate", "distortion"):
        np.testing.assert_allclose(got[name], np.mean(terms[name]), rtol=1e-5)
      np.testing.assert_allclose(got["nll"], -np.mean(log_px), rtol=1e-5)
      np.testing.assert_allclose(
        got["kl_per_dim"], np.mean(terms["kl_per_dim"], 0), rtol=1e-5
      )
      np.testing.assert_allclose(
        got["posterior_mean_variance"],
        np.var(terms["mean"].astype(np.float64), 0),
        rtol=1e-5,
      )
      self.assertEqual((got["num_examples"], got["nll_samples"]), (10, 20))

  @pytest.mark.slow
  def test_exact_posterior_one_compilation_and_bits_per_dim(self):
    m = LinearGaussianVAE(num_examples=5)
    traces = []

    def encode(x):
      traces.append(x.shape)
      return m.encode_exact(x)

    got = evaluation.evaluate(
      encode,
      m.log_likelihood,
      jnp.asarray(m.x),
      jax.random.key(0),
      num_samples=3,
      chunk_size=2,
      batch_size=2,
      num_dims=12,
      bits_offset_nats_per_dim=math.log(256),
    )
    self.assertEqual(traces, [(2, 12)])  # 3 batches, the last one padded
    np.testing.assert_allclose(got["nll"], -np.mean(m.log_px), rtol=1e-12)
    np.testing.assert_allclose(
      got["bits_per_dim"],
      (got["nll"] + 12 * math.log(256)) / (12 * math.log(2)),
      rtol=1e-14,
    )

  @pytest.mark.slow
  def test_bernoulli_decoder_under_jit_with_a_dead_unit(self):
    rng = np.random.default_rng(4)
    x = (rng.random((9, 20)) < 0.3).astype(np.float32)
    enc = rng.normal(size=(20, 4)).astype(np.float32)
    enc[:, 3] = 0  # unit 3: mean 0, log-variance 0, so q = p and KL = 0
    dec = rng.normal(size=(4, 20)).astype(np.float32)

    def encode(x):
      mean = x @ enc
      return mean, jnp.zeros_like(mean).at[:, :3].set(-1.0)

    log_likelihood = lambda x, z: vae_jax.bernoulli_log_likelihood(x, z @ dec)
    got = evaluation.evaluate(
      encode,
      log_likelihood,
      x,
      jax.random.key(5),
      num_samples=30,
      chunk_size=8,
      batch_size=4,
      num_dims=20,
    )
    self.assertEqual(json.loads(json.dumps(got)), got)
    self.assertTrue(
      all(
        math.isfinite(got[name])
        for name in ("elbo", "rate", "distortion", "nll", "bits_per_dim")
      )
    )
    self.assertEqual(got["active_units"], 3)
    self.assertEqual(got["kl_per_dim"][3], 0.0)
    np.testing.assert_allclose(
      got["bits_per_dim"], got["nll"] / (20 * math.log(2)), rtol=1e-6
    )
    np.testing.assert_allclose(
      got["elbo"], -(got["rate"] + got["distortion"]), rtol=1e-6
    )
