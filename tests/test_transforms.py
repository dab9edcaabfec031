"""Every public per-example function under jit, vmap and grad, in every float dtype."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax import test_util
import numpy as np
import pytest

import vae_jax

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

SHAPE, LATENT = (4, 5), (3,)


def _unit(rng, shape):
  return rng.uniform(0.05, 0.95, shape)


# name -> (function, argument makers); every argument is differentiable.
CASES = {
  "bernoulli": (
    vae_jax.bernoulli_log_likelihood,
    lambda r: (_unit(r, SHAPE), r.normal(0, 3, SHAPE)),
  ),
  "bernoulli_probs": (
    vae_jax.bernoulli_log_likelihood_from_probs,
    lambda r: (_unit(r, SHAPE), _unit(r, SHAPE)),
  ),
  "gaussian": (
    vae_jax.gaussian_log_likelihood,
    lambda r: (r.random(SHAPE), r.random(SHAPE), r.uniform(0.1, 2, SHAPE)),
  ),
  "continuous_bernoulli": (
    vae_jax.continuous_bernoulli_log_likelihood,
    lambda r: (_unit(r, SHAPE), r.normal(0, 3, SHAPE)),
  ),
  "cb_normalizer": (
    lambda l: jnp.sum(vae_jax.continuous_bernoulli_log_normalizer(l)),
    lambda r: (r.normal(0, 3, SHAPE),),
  ),
  "kl": (
    vae_jax.kl_standard_normal,
    lambda r: (r.normal(size=LATENT), r.normal(size=LATENT)),
  ),
  "standard_normal": (
    vae_jax.standard_normal_log_density,
    lambda r: (r.normal(size=LATENT),),
  ),
  "diagonal_gaussian": (
    vae_jax.diagonal_gaussian_log_density,
    lambda r: tuple(r.normal(size=LATENT) for _ in range(3)),
  ),
  "kl_monte_carlo": (
    vae_jax.kl_monte_carlo,
    lambda r: tuple(r.normal(size=LATENT) for _ in range(3)),
  ),
  "optimal_sigma2": (
    vae_jax.optimal_sigma2,
    lambda r: (r.random(SHAPE), r.random(SHAPE)),
  ),
  "iwae": (vae_jax.importance_weighted_bound, lambda r: (r.normal(size=(7,)),)),
  "log_importance_weight": (
    vae_jax.log_importance_weight,
    lambda r: (
      (np.array(r.normal()),) + tuple(r.normal(size=LATENT) for _ in range(3))
    ),
  ),
  "negative_elbo": (
    lambda x, l, m, v: vae_jax.negative_elbo(
      x, l, m, v, beta=2.0, likelihood="continuous_bernoulli"
    ),
    lambda r: (
      _unit(r, SHAPE),
      r.normal(0, 3, SHAPE),
      r.normal(size=LATENT),
      r.normal(size=LATENT),
    ),
  ),
}
FLOATS = [np.float32, np.float64]


def _args(name, dtype, seed=0, batch=None):
  rng = np.random.default_rng(seed)
  make = CASES[name][1]
  if batch is None:
    return tuple(jnp.asarray(a, dtype) for a in make(rng))
  per_example = [make(rng) for _ in range(batch)]
  return tuple(jnp.asarray(np.stack(a), dtype) for a in zip(*per_example))


class TransformTest(parameterized.TestCase):
  @parameterized.product(name=sorted(CASES), dtype=FLOATS)
  def test_jit_equals_eager_and_keeps_dtype(self, name, dtype):
    fn, args = CASES[name][0], _args(name, dtype)
    eager, jitted = fn(*args), jax.jit(fn)(*args)
    self.assertEqual(eager.shape, ())
    self.assertEqual(eager.dtype, dtype)
    np.testing.assert_allclose(
      jitted, eager, rtol=1e-6 if dtype == np.float32 else 1e-14
    )

  @parameterized.product(name=sorted(CASES), dtype=FLOATS)
  def test_vmap_equals_python_loop(self, name, dtype):
    fn, args = CASES[name][0], _args(name, dtype, batch=6)
    loop = np.array([fn(*(a[i] for a in args)) for i in range(6)])
    np.testing.assert_allclose(
      jax.jit(jax.vmap(fn))(*args),
      loop,
      rtol=1e-6 if dtype == np.float32 else 1e-14,
    )

  @parameterized.parameters(*sorted(CASES))
  def test_gradients_match_finite_differences_in_float64(self, name):
    fn, args = CASES[name][0], _args(name, np.float64, seed=1)
    # Compiled: eagerly, each of check_grads' hundreds of calls would
    # dispatch the function's graph op by op.
    test_util.check_grads(
      jax.jit(fn), args, order=2, modes=["rev", "fwd"], eps=1e-5
    )

  @parameterized.parameters(*sorted(CASES))
  def test_bfloat16_values_and_gradients_are_finite_and_close(self, name):
    fn = CASES[name][0]
    args16, args64 = _args(name, jnp.bfloat16, 2), _args(name, np.float64, 2)
    # Compare at the bfloat16-rounded inputs, so only the arithmetic differs.
    args64 = tuple(a.astype(np.float64) for a in args16)
    value, grads = jax.value_and_grad(fn, range(len(args16)))(*args16)
    self.assertEqual(value.dtype, jnp.bfloat16)
    chex.assert_tree_all_finite((value, grads))
    np.testing.assert_allclose(
      float(value), float(fn(*args64)), rtol=3e-2, atol=3e-2
    )


# name -> (function of (x, logits), its value at the inputs below). Per pixel
# the Bernoulli term is 0 or -1e3 (-500 at x = 1/2), the CB adds log 1e3.
LOGIT_CASES = {
  "bernoulli": (vae_jax.bernoulli_log_likelihood, -3000.0),
  "continuous_bernoulli": (
    vae_jax.continuous_bernoulli_log_likelihood,
    -3000.0 + 6 * np.log(1e3),
  ),
  "negative_elbo": (
    lambda x, l: vae_jax.negative_elbo(
      x, l, jnp.zeros(2, l.dtype), jnp.zeros(2, l.dtype)
    ),
    3000.0,
  ),
}


class ExtremeLogitTest(parameterized.TestCase):
  @parameterized.product(
    name=sorted(LOGIT_CASES),
    dtype=[np.float32, np.float64, jnp.bfloat16, np.float16],
  )
  def test_finite_values_and_gradients_at_1e3(self, name, dtype):
    fn, expected = LOGIT_CASES[name]
    x = jnp.asarray([0, 1, 0, 1, 0.5, 0.5], dtype)
    logits = jnp.asarray([1e3, 1e3, -1e3, -1e3, 1e3, -1e3], dtype)
    for f in (fn, jax.jit(fn)):
      value, grads = jax.value_and_grad(f, (0, 1))(x, logits)
      chex.assert_tree_all_finite((value, grads))
      np.testing.assert_allclose(
        float(value),
        expected,
        rtol=1e-6 if dtype in (np.float32, np.float64) else 1e-2,
      )
