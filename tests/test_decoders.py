"""The decoder registry: each entry against independent references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

import vae_jax
from vae_jax import decoders

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(3, 4)).astype(np.float32)
LOGITS = RNG.normal(scale=3.0, size=(3, 4)).astype(np.float32)


def _sigmoid(l):
  return 1 / (1 + np.exp(-np.float64(l)))


def test_registry_names_and_exports():
  assert decoders.NAMES == (
    "bernoulli",
    "continuous_bernoulli",
    "gaussian",
    "laplace",
    "discretized_logistic",
    "discretized_logistic_mixture",
  )
  assert vae_jax.DECODERS is decoders.DECODERS
  with pytest.raises(ValueError, match="likelihood must be one of"):
    decoders.get("poisson")


def test_bernoulli_entry_is_minus_the_summed_bce():
  x = (X > 0.5).astype(np.float32)
  p = _sigmoid(LOGITS)
  expected = stats.bernoulli.logpmf(x, p).sum()
  got = jax.jit(decoders.get("bernoulli").log_likelihood)(x, LOGITS)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  np.testing.assert_allclose(
    decoders.get("bernoulli").mean(LOGITS), p, rtol=1e-6
  )


@pytest.mark.parametrize("sigma2", [0.01, 0.5])
@pytest.mark.slow
def test_gaussian_entry_uses_the_sigmoid_mean(sigma2):
  mean = _sigmoid(LOGITS)
  expected = stats.norm.logpdf(X, mean, math.sqrt(sigma2)).sum()
  got = decoders.get("gaussian").log_likelihood(X, LOGITS, sigma2)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  per_pixel = np.full(X.shape, sigma2, np.float32)
  assert float(
    decoders.get("gaussian").log_likelihood(X, LOGITS, per_pixel)
  ) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_continuous_bernoulli_entry_is_a_normalised_density():
  # log C(l) + x log sigmoid(l) + (1 - x) log sigmoid(-l), C(l) = l / tanh(l/2)
  # (Loaiza-Ganem & Cunningham 2019), by hand in float64.
  l = np.float64(LOGITS)
  log_c = np.log(l / np.tanh(l / 2))
  expected = np.sum(
    log_c + X * np.log(_sigmoid(l)) + (1 - X) * np.log(_sigmoid(-l))
  )
  got = decoders.get("continuous_bernoulli").log_likelihood(X, LOGITS)
  assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_vmapped_entries_match_a_loop():
  for decoder in decoders.DECODERS.values():
    kw = dict(sigma2=0.1) if decoder.uses_sigma2 else {}
    x = LEVELS if decoder.support == "levels" else X
    out = RNG.normal(size=(3, *decoder.output_shape((4,), 2)))
    out = out.astype(np.float32)
    batched = jax.vmap(
      lambda x, l, d=decoder, kw=kw: d.log_likelihood(x, l, levels=17, **kw)
    )(x, out)
    loop = [
      decoder.log_likelihood(xi, o, levels=17, **kw) for xi, o in zip(x, out)
    ]
    np.testing.assert_allclose(batched, loop, rtol=1e-6)


@pytest.mark.parametrize(
  "name,seen,levels,offset",
  [
    ("bernoulli", "binary", 2, 0.0),  # a mass on binary data
    ("bernoulli", "dequantized", 256, None),  # soft targets: no likelihood
    ("bernoulli", "levels", 256, None),
    ("gaussian", "binary", 256, None),  # a density on binary data
    ("gaussian", "dequantized", 256, math.log(256)),
    ("gaussian", "levels", 256, None),  # a density on 256 points
    ("laplace", "dequantized", 17, math.log(17)),
    ("continuous_bernoulli", "dequantized", 17, math.log(17)),
    ("continuous_bernoulli", "binary", 2, None),
    # A mass on the levels: exact there, no bound; nothing elsewhere.
    ("discretized_logistic", "levels", 256, 0.0),
    ("discretized_logistic_mixture", "levels", 17, 0.0),
    ("discretized_logistic", "dequantized", 256, None),
    ("discretized_logistic_mixture", "binary", 2, None),
  ],
)
def test_bits_per_dim_rule(name, seen, levels, offset):
  assert decoders.bits_per_dim_offset(name, data=seen, levels=levels) == offset
  with pytest.raises(ValueError, match="data must be one of"):
    decoders.bits_per_dim_offset(name, data="continuous", levels=levels)


# --------------------------------------------------------------------------
# The decoders for 8-bit images: each entry against its core function and
# a float64 sum over the levels.

LEVELS = (
  np.random.default_rng(1).integers(0, 17, (3, 4)).astype(np.float32) / 16
)


def _logistic_masses(mean, log_scale, levels):
  """P(x = k / n) for every k, float64, on a trailing axis (open edge bins)."""
  n = levels - 1
  edges = (np.arange(levels - 1) + 0.5) / n
  cdf = stats.logistic.cdf(
    edges, np.float64(mean)[..., None], np.exp(np.float64(log_scale))[..., None]
  )
  ones = np.ones(cdf.shape[:-1] + (1,))
  return np.diff(np.concatenate([0 * ones, cdf, ones], axis=-1), axis=-1)


def test_output_shapes_follow_channels_per_dim():
  shapes = {
    name: decoders.get(name).output_shape((8, 8, 1), 5)
    for name in decoders.NAMES
  }
  assert shapes == dict(
    bernoulli=(8, 8, 1),
    continuous_bernoulli=(8, 8, 1),
    gaussian=(8, 8, 1),
    laplace=(8, 8, 1),
    discretized_logistic=(8, 8, 1, 2),
    discretized_logistic_mixture=(8, 8, 1, 15),
  )
  assert decoders.get("discretized_logistic_mixture").output_shape((3,), 1) == (
    3,
    3,
  )


def _locations_and_log_scales(*shape):
  """Locations around [0, 1] and log scales whose masses float64 resolves."""
  rng = np.random.default_rng(2)
  return rng.uniform(-0.5, 1.5, shape), rng.uniform(-3.0, 1.0, shape)


def test_discretized_logistic_entry_is_the_core_function_of_its_output():
  out = np.stack(_locations_and_log_scales(3, 4), -1).astype(np.float32)
  out[0, 0] = LEVELS[0, 0], -20.0  # below the floor of log s
  entry = decoders.get("discretized_logistic")
  got = jax.jit(functools.partial(entry.log_likelihood, levels=17))(LEVELS, out)
  log_scale = np.maximum(out[..., 1], decoders.MIN_LOG_SCALE)
  want = vae_jax.discretized_logistic_log_likelihood(
    LEVELS, out[..., 0], log_scale, levels=17
  )
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  # And by scipy's bins, in float64.
  masses = _logistic_masses(out[..., 0], log_scale, 17)
  k = np.round(LEVELS * 16).astype(int)
  expected = np.log(np.take_along_axis(masses, k[..., None], -1)).sum()
  assert float(got) == pytest.approx(expected, rel=1e-5)
  # E[x]: the sum over the levels of k / n times its mass.
  mean = jax.jit(functools.partial(entry.mean, levels=17))(out)
  np.testing.assert_allclose(
    mean, masses @ (np.arange(17) / 16), rtol=1e-5, atol=1e-6
  )


def test_mixture_entry_splits_weights_means_and_log_scales():
  n = 3
  weights = RNG.normal(size=(3, 4, n))
  out = np.concatenate(
    [weights, *_locations_and_log_scales(3, 4, n)], -1
  ).astype(np.float32)
  entry = decoders.get("discretized_logistic_mixture")
  got = jax.jit(functools.partial(entry.log_likelihood, levels=17))(LEVELS, out)
  weights, means, raw = out[..., :n], out[..., n : 2 * n], out[..., 2 * n :]
  log_scales = np.maximum(raw, decoders.MIN_LOG_SCALE)
  want = vae_jax.discretized_logistic_mixture_log_likelihood(
    LEVELS, weights, means, log_scales, levels=17
  )
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  # A loop over the components in float64: sum_j w_j P_j(x), and E[x].
  w = special.softmax(np.float64(weights), axis=-1)
  masses = sum(
    w[..., j, None] * _logistic_masses(means[..., j], log_scales[..., j], 17)
    for j in range(n)
  )
  k = np.round(LEVELS * 16).astype(int)
  expected = np.log(np.take_along_axis(masses, k[..., None], -1)).sum()
  assert float(got) == pytest.approx(expected, rel=1e-5)
  mean = jax.jit(functools.partial(entry.mean, levels=17))(out)
  np.testing.assert_allclose(
    mean, masses @ (np.arange(17) / 16), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize("b", [0.05, 0.5])
def test_laplace_entry_uses_the_sigmoid_location_and_b(b):
  expected = stats.laplace.logpdf(X, _sigmoid(LOGITS), b).sum()
  entry = decoders.get("laplace")
  got = jax.jit(entry.log_likelihood)(X, LOGITS, b)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  per_pixel = np.full(X.shape, b, np.float32)
  assert float(jax.jit(entry.log_likelihood)(X, LOGITS, per_pixel)) == (
    pytest.approx(expected, rel=1e-5)
  )
  assert "optimal" not in entry.sigma2_modes and entry.uses_sigma2


def test_negative_elbo_reads_the_new_entries_by_name():
  out = RNG.normal(size=(3, 4, 2)).astype(np.float32)
  mean, log_var = np.zeros(2, np.float32), np.zeros(2, np.float32)
  elbo = vae_jax.negative_elbo(
    LEVELS, out, mean, log_var, likelihood="discretized_logistic", levels=17
  )
  entry = decoders.get("discretized_logistic")
  want = -entry.log_likelihood(LEVELS, out, levels=17)
  assert float(elbo) == pytest.approx(float(want), rel=1e-6)


def test_reparameterize_is_mean_plus_scaled_noise():
  mean, log_var = np.float32([0.5, -1.0]), np.float32([0.0, 2.0])
  eps = np.float32([1.0, -2.0])
  z = vae_jax.divergences.reparameterize(mean, log_var, eps)
  np.testing.assert_allclose(z, [1.5, -1.0 - 2.0 * math.e], rtol=1e-6)
  assert jnp.asarray(z).dtype == jnp.float32
