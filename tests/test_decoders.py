"""The decoder registry: each entry against independent references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vae_jax
from vae_jax import decoders

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(3, 4)).astype(np.float32)
LOGITS = RNG.normal(scale=3.0, size=(3, 4)).astype(np.float32)


def _sigmoid(l):
  return 1 / (1 + np.exp(-np.float64(l)))


def test_registry_names_and_exports():
  assert decoders.NAMES == ("bernoulli", "continuous_bernoulli", "gaussian")
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
def test_gaussian_entry_uses_the_sigmoid_mean(sigma2):
  mean = _sigmoid(LOGITS)
  expected = stats.norm.logpdf(X, mean, math.sqrt(sigma2)).sum()
  got = decoders.get("gaussian").log_likelihood(X, LOGITS, sigma2)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  per_pixel = np.full(X.shape, sigma2, np.float32)
  assert float(
    decoders.get("gaussian").log_likelihood(X, LOGITS, per_pixel)
  ) == pytest.approx(expected, rel=1e-5)


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


def test_vmapped_entries_match_a_loop():
  for decoder in decoders.DECODERS.values():
    kw = dict(sigma2=0.1) if decoder.uses_sigma2 else {}
    batched = jax.vmap(
      lambda x, l, d=decoder, kw=kw: d.log_likelihood(x, l, **kw)
    )(X, LOGITS)
    loop = [decoder.log_likelihood(x, l, **kw) for x, l in zip(X, LOGITS)]
    np.testing.assert_allclose(batched, loop, rtol=1e-6)


@pytest.mark.parametrize(
  "name,binary,levels,offset",
  [
    ("bernoulli", True, 2, 0.0),  # a mass on binary data
    ("bernoulli", False, 256, None),  # soft targets: not a likelihood
    ("gaussian", True, 256, None),  # a density on binary data
    ("gaussian", False, 256, math.log(256)),
    ("continuous_bernoulli", False, 17, math.log(17)),
    ("continuous_bernoulli", True, 2, None),
  ],
)
def test_bits_per_dim_rule(name, binary, levels, offset):
  assert (
    decoders.bits_per_dim_offset(name, binary_data=binary, levels=levels)
    == offset
  )


def test_reparameterize_is_mean_plus_scaled_noise():
  mean, log_var = np.float32([0.5, -1.0]), np.float32([0.0, 2.0])
  eps = np.float32([1.0, -2.0])
  z = vae_jax.divergences.reparameterize(mean, log_var, eps)
  np.testing.assert_allclose(z, [1.5, -1.0 - 2.0 * math.e], rtol=1e-6)
  assert jnp.asarray(z).dtype == jnp.float32
