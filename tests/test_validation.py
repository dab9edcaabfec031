"""Bad input gets an error naming the argument and the problem."""

from absl.testing import parameterized
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np

import vae_jax

X = jnp.full((4,), 0.5)
LOGITS = jnp.zeros(4)


class TraceTimeErrorTest(parameterized.TestCase):
  """Shape and dtype errors: raised eagerly and when tracing under jit alike."""

  @parameterized.named_parameters(
    (
      "bernoulli_shape",
      vae_jax.bernoulli_log_likelihood,
      (X, jnp.zeros(5)),
      ValueError,
      r"logits has shape \(5,\) but x has shape \(4,\)",
    ),
    (
      "batch_vs_example",
      vae_jax.bernoulli_log_likelihood,
      (X, jnp.zeros((2, 4))),
      ValueError,
      r"vmap over the batch",
    ),
    (
      "gaussian_shape",
      vae_jax.gaussian_log_likelihood,
      (X, jnp.zeros(3), 1.0),
      ValueError,
      r"mean has shape \(3,\)",
    ),
    (
      "sigma2_shape",
      vae_jax.gaussian_log_likelihood,
      (X, X, jnp.ones(3)),
      ValueError,
      r"sigma2 has shape \(3,\), which does not broadcast",
    ),
    (
      "sigma2_grows_x",
      vae_jax.gaussian_log_likelihood,
      (X, X, jnp.ones((2, 4))),
      ValueError,
      r"sigma2 has shape \(2, 4\)",
    ),
    (
      "kl_shape",
      vae_jax.kl_standard_normal,
      (jnp.zeros(2), jnp.zeros(3)),
      ValueError,
      r"log_variance has shape \(3,\) but mean has shape \(2,\)",
    ),
    (
      "z_shape",
      vae_jax.kl_monte_carlo,
      (jnp.zeros(3), jnp.zeros(2), jnp.zeros(2)),
      ValueError,
      r"z has shape \(3,\)",
    ),
    (
      "integer_x",
      vae_jax.bernoulli_log_likelihood,
      (jnp.ones(4, jnp.int32), LOGITS),
      TypeError,
      r"x has dtype int32, but a floating dtype is needed",
    ),
    (
      "uint8_x",
      vae_jax.continuous_bernoulli_log_likelihood,
      (np.ones(4, np.uint8), LOGITS),
      TypeError,
      r"x has dtype uint8",
    ),
    (
      "bool_probs",
      vae_jax.bernoulli_log_likelihood_from_probs,
      (X, jnp.ones(4, bool)),
      TypeError,
      r"probs has dtype bool",
    ),
    (
      "list_x",
      vae_jax.gaussian_log_likelihood,
      ([0.5] * 4, X, 1.0),
      TypeError,
      r"x must be a jax.Array or numpy.ndarray, got list",
    ),
    (
      "integer_sigma2",
      vae_jax.gaussian_log_likelihood,
      (X, X, jnp.ones(4, int)),
      TypeError,
      r"sigma2 has dtype",
    ),
    (
      "iwae_batch",
      vae_jax.importance_weighted_bound,
      (jnp.zeros((3, 2)),),
      ValueError,
      r"log_weights must have shape \[K\]",
    ),
  )
  def test_error(self, fn, args, error, message):
    with self.assertRaisesRegex(error, message):
      fn(*args)
    with self.assertRaisesRegex(error, message):
      jax.jit(fn)(*args)

  def test_python_scalar_where_an_array_is_needed(self):
    with self.assertRaisesRegex(
      TypeError, r"logits must be a jax.Array or numpy.ndarray, got a scalar"
    ):
      vae_jax.bernoulli_log_likelihood(X, 0.0)
    # jit turns the scalar into a 0-d array: then it is a shape error.
    with self.assertRaisesRegex(
      ValueError, r"logits has shape \(\) but x has shape \(4,\)"
    ):
      jax.jit(vae_jax.bernoulli_log_likelihood)(X, 0.0)

  def test_unknown_likelihood_is_named(self):
    with self.assertRaisesRegex(
      ValueError, r"likelihood must be one of .*'gaussian'.*got 'gauss'"
    ):
      vae_jax.negative_elbo(X, X, LOGITS, LOGITS, likelihood="gauss")


VALUE_CASES = (
  (
    "x_above_one",
    vae_jax.bernoulli_log_likelihood,
    (X.at[1].set(1.5), LOGITS),
    r"x must lie in \[0, 1\]",
  ),
  (
    "x_negative",
    vae_jax.continuous_bernoulli_log_likelihood,
    (X.at[0].set(-0.1), LOGITS),
    r"x must lie in \[0, 1\]",
  ),
  (
    "x_nan",
    vae_jax.bernoulli_log_likelihood,
    (X.at[2].set(jnp.nan), LOGITS),
    r"x must lie in \[0, 1\]",
  ),
  (
    "probs_above_one",
    vae_jax.bernoulli_log_likelihood_from_probs,
    (X, X.at[3].set(1.01)),
    r"probs must lie in \[0, 1\]",
  ),
  (
    "logits_nan",
    vae_jax.bernoulli_log_likelihood,
    (X, LOGITS.at[0].set(jnp.nan)),
    r"logits must not contain NaN",
  ),
  (
    "cb_logits_nan",
    vae_jax.continuous_bernoulli_log_likelihood,
    (X, LOGITS.at[1].set(jnp.nan)),
    r"logits must not contain NaN",
  ),
  (
    "sigma2_zero",
    vae_jax.gaussian_log_likelihood,
    (X, X, 0.0),
    r"sigma2 must be > 0",
  ),
  (
    "sigma2_negative_pixel",
    vae_jax.gaussian_log_likelihood,
    (X, X, jnp.ones(4).at[2].set(-1)),
    r"sigma2 must be > 0",
  ),
  (
    "mean_nan",
    vae_jax.gaussian_log_likelihood,
    (X, X.at[0].set(jnp.nan), 1.0),
    r"mean must not contain NaN",
  ),
  (
    "log_variance_nan",
    vae_jax.kl_standard_normal,
    (LOGITS, LOGITS.at[0].set(jnp.nan)),
    r"log_variance must not contain NaN",
  ),
  (
    "negative_beta",
    lambda x, l, m, v, b: vae_jax.negative_elbo(x, l, m, v, beta=b),
    (X, LOGITS, LOGITS, LOGITS, jnp.float32(-1.0)),
    r"beta must be >= 0",
  ),
)


class ValueErrorTest(parameterized.TestCase):
  @parameterized.named_parameters(*VALUE_CASES)
  def test_concrete_input_raises_value_error(self, fn, args, message):
    with self.assertRaisesRegex(ValueError, message):
      fn(*args)

  @parameterized.named_parameters(*VALUE_CASES)
  def test_checked_variant_raises_under_jit(self, fn, args, message):
    err, _ = jax.jit(vae_jax.checked(fn))(*args)
    with self.assertRaisesRegex(checkify.JaxRuntimeError, message):
      err.throw()

  @parameterized.named_parameters(*VALUE_CASES)
  def test_plain_jit_skips_value_checks(self, fn, args, message):
    del message  # the hot path carries no checks: it must not raise
    jax.jit(fn)(*args)

  def test_concrete_constants_inside_jit_are_still_checked(self):
    bad_x = np.full(4, 2.0, np.float32)  # a NumPy constant closed over by jit
    with self.assertRaisesRegex(ValueError, r"x must lie in \[0, 1\]"):
      jax.jit(lambda l: vae_jax.bernoulli_log_likelihood(bad_x, l))(LOGITS)
    with self.assertRaisesRegex(ValueError, r"sigma2 must be > 0"):
      jax.jit(lambda x: vae_jax.gaussian_log_likelihood(x, x, -1.0))(X)
    with self.assertRaisesRegex(ValueError, r"beta must be >= 0"):
      jax.jit(
        lambda x: vae_jax.negative_elbo(x, LOGITS, LOGITS, LOGITS, beta=-2)
      )(X)

  def test_checked_variant_finds_the_bad_example_in_a_vmapped_batch(self):
    x = jnp.full((3, 4), 0.5).at[1, 2].set(2.0)
    err, _ = jax.jit(
      vae_jax.checked(vae_jax.batched(vae_jax.bernoulli_log_likelihood))
    )(x, jnp.zeros((3, 4)))
    with self.assertRaisesRegex(
      checkify.JaxRuntimeError, r"x must lie in \[0, 1\]"
    ):
      err.throw()

  def test_checked_valid_extreme_input_has_no_error_and_no_internal_nan(self):
    x = jnp.array([0.0, 1.0, 0.5, 1.0])
    extreme = jnp.array([1e3, -1e3, 0.0, 1e-9])
    probs = jnp.array([0.0, 1.0, 0.5, 1e-30])
    errors = checkify.user_checks | checkify.nan_checks | checkify.div_checks
    for fn, args in (
      (vae_jax.bernoulli_log_likelihood, (x, extreme)),
      (vae_jax.continuous_bernoulli_log_likelihood, (x, extreme)),
      (vae_jax.bernoulli_log_likelihood_from_probs, (x, probs)),
      (vae_jax.kl_standard_normal, (extreme[2:], extreme[2:])),
    ):
      grad_fn = jax.grad(fn, argnums=1)
      for f in (fn, grad_fn):
        err, out = jax.jit(vae_jax.checked(f, errors))(*args)
        self.assertIsNone(err.get(), msg=f"{fn.__name__}: {err.get()}")
        self.assertTrue(np.all(np.isfinite(out)))

  def test_error_message_shows_an_offending_value(self):
    with self.assertRaisesRegex(
      ValueError, r"found 1 value\(s\) that do not, e.g. -2.0"
    ):
      vae_jax.gaussian_log_likelihood(X, X, jnp.ones(4).at[3].set(-2.0))
