"""Bad input gets an error naming the argument and the problem."""

from absl.testing import parameterized
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

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
    r"sigma2 must be finite and > 0",
  ),
  (
    "sigma2_negative_pixel",
    vae_jax.gaussian_log_likelihood,
    (X, X, jnp.ones(4).at[2].set(-1)),
    r"sigma2 must be finite and > 0",
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
    "sigma2_inf",
    vae_jax.gaussian_log_likelihood,
    (X, X, jnp.inf),
    r"sigma2 must be finite and > 0",
  ),
  (
    "cb_logits_inf",
    vae_jax.continuous_bernoulli_log_likelihood,
    (X, LOGITS.at[2].set(-jnp.inf)),
    r"logits must not be \+-inf",
  ),
  (
    "beta_inf",
    lambda x, l, m, v, b: vae_jax.negative_elbo(x, l, m, v, beta=b),
    (X, LOGITS, LOGITS, LOGITS, jnp.float32(jnp.inf)),
    r"beta must be finite and >= 0",
  ),
  (
    "negative_beta",
    lambda x, l, m, v, b: vae_jax.negative_elbo(x, l, m, v, beta=b),
    (X, LOGITS, LOGITS, LOGITS, jnp.float32(-1.0)),
    r"beta must be finite and >= 0",
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
    with self.assertRaisesRegex(ValueError, r"sigma2 must be finite and > 0"):
      jax.jit(lambda x: vae_jax.gaussian_log_likelihood(x, x, -1.0))(X)
    with self.assertRaisesRegex(ValueError, r"beta must be finite and >= 0"):
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

  @pytest.mark.slow
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


class InfiniteAndBatchRuleTest(parameterized.TestCase):
  @parameterized.parameters(
    (1.0, np.inf, 0.0),
    (0.0, np.inf, -np.inf),
    (0.0, -np.inf, 0.0),
    (1.0, -np.inf, -np.inf),
    (0.5, np.inf, -np.inf),
  )
  def test_bernoulli_at_infinite_logits_is_the_limit(self, x, logit, limit):
    # The limit of x log sigmoid(l) + (1 - x) log sigmoid(-l) as l -> +-inf,
    # next to a finite logit whose value is unchanged.
    xs = jnp.array([x, 1.0], jnp.float32)
    ls = jnp.array([logit, 2.0], jnp.float32)
    got = float(jax.jit(vae_jax.bernoulli_log_likelihood)(xs, ls))
    finite = float(np.log(1 / (1 + np.exp(-2.0))))
    if np.isfinite(limit):
      self.assertAlmostEqual(got, limit + finite, places=6)
    else:
      self.assertEqual(got, limit)

  def test_checked_returns_the_error_for_concrete_bad_input(self):
    # Python numbers and NumPy constants too: the error comes back, no raise.
    bad_x = np.full(4, 2.0, np.float32)
    err, out = vae_jax.checked(
      lambda x: vae_jax.gaussian_log_likelihood(x, x, -1.0)
    )(X)
    with self.assertRaisesRegex(checkify.JaxRuntimeError, "sigma2 must"):
      err.throw()
    self.assertTrue(np.isnan(out))
    err, _ = vae_jax.checked(
      lambda l: vae_jax.bernoulli_log_likelihood(bad_x, l)
    )(LOGITS)
    with self.assertRaisesRegex(checkify.JaxRuntimeError, r"x must lie in"):
      err.throw()
    err, _ = vae_jax.checked(vae_jax.bernoulli_log_likelihood)(X, LOGITS)
    err.throw()  # good input: no error

  def test_a_batch_is_one_example_to_a_per_example_function(self):
    # The documented rule: everything is summed; batched(..., event_ndim)
    # is the check that tells a batch from an example.
    x = jnp.full((4, 6), 0.25, jnp.float32)
    l = jnp.linspace(-3, 3, 24, dtype=jnp.float32).reshape(4, 6)
    whole = vae_jax.bernoulli_log_likelihood(x, l)
    rows = [vae_jax.bernoulli_log_likelihood(a, b) for a, b in zip(x, l)]
    self.assertAlmostEqual(float(whole), float(sum(rows)), places=4)
    per_row = vae_jax.batched(
      vae_jax.bernoulli_log_likelihood, "none", event_ndim=1
    )(x, l)
    np.testing.assert_allclose(per_row, rows, rtol=1e-6)
    with self.assertRaisesRegex(
      ValueError,
      r"positional argument 0 has shape"
      r" \(4, 6\): expected a batch of examples of"
      r" rank 2",
    ):
      vae_jax.batched(vae_jax.bernoulli_log_likelihood, event_ndim=2)(x, l)
    elbo = vae_jax.batched(vae_jax.negative_elbo, event_ndim=(1, 1, 1, 1))
    z = jnp.zeros((4, 2), jnp.float32)
    self.assertTrue(np.isfinite(elbo(x, l, z, z)))
    with self.assertRaisesRegex(ValueError, "argument 2 has shape"):
      vae_jax.batched(vae_jax.negative_elbo, event_ndim=(1, 1, 2, 1))(
        x, l, z, z
      )


class SilentCasesTest(parameterized.TestCase):
  """Inputs that once gave NaN or broadcast silently (issue 19)."""

  @parameterized.named_parameters(
    ("example", vae_jax.optimal_sigma2, (0,)),
    ("example_2d", vae_jax.optimal_sigma2, (3, 0)),
    ("batch_of_none", vae_jax.optimal_sigma2_batch, (0, 4)),
    ("batch_of_empty", vae_jax.optimal_sigma2_batch, (5, 0)),
  )
  def test_optimal_sigma2_of_nothing_raises_at_trace_time(self, fn, shape):
    empty = jnp.zeros(shape)
    message = rf"x must not be empty, got shape \({shape[0]},"
    with self.assertRaisesRegex(ValueError, message):
      fn(empty, empty)
    with self.assertRaisesRegex(ValueError, message):
      jax.jit(fn)(empty, empty)

  def test_log_importance_weight_needs_one_scalar_log_likelihood(self):
    z = jnp.zeros(2)
    with self.assertRaisesRegex(
      ValueError,
      r"log_likelihood must be a scalar \(shape \[\]\), got shape \(3,\)",
    ):
      vae_jax.log_importance_weight(jnp.zeros(3), z, z, z)
    with self.assertRaisesRegex(ValueError, r"log_likelihood must be a scalar"):
      jax.jit(vae_jax.log_importance_weight)(jnp.zeros((1,)), z, z, z)
    # One scalar, as an array or a number, is what it takes.
    for log_lik in (jnp.float32(-2.0), -2.0):
      weight = vae_jax.log_importance_weight(log_lik, z, z, z)
      self.assertEqual(float(weight), -2.0)

  @parameterized.parameters(np.float32, np.float64)
  def test_kl_at_infinite_log_variance_is_its_limit(self, dtype):
    mean = np.array([0.5, 0.0, -1.0, 2.0], dtype)
    log_var = np.array([np.inf, -np.inf, 1e3, 0.3], dtype)
    per_dim = vae_jax.kl_standard_normal_per_dim(mean, log_var)
    self.assertEqual(per_dim.dtype, dtype)
    np.testing.assert_array_equal(per_dim[:3], [np.inf] * 3)
    finite = 0.5 * (np.expm1(0.3) - 0.3 + 4.0)
    np.testing.assert_allclose(per_dim[3], finite, rtol=1e-6)
    self.assertEqual(float(vae_jax.kl_standard_normal(mean, log_var)), np.inf)
    self.assertEqual(
      float(jax.jit(vae_jax.kl_standard_normal)(mean[:1], log_var[:1])), np.inf
    )
    # The slope (e^v - 1) / 2 has the same limit, and no NaN appears anywhere.
    grad_mean, grad_log_var = jax.grad(
      lambda m, v: jnp.sum(vae_jax.kl_standard_normal_per_dim(m, v)), (0, 1)
    )(mean, log_var)
    np.testing.assert_allclose(grad_mean, mean, rtol=1e-6)
    self.assertEqual(grad_log_var[0], np.inf)
    self.assertEqual(grad_log_var[1], -0.5)
    self.assertEqual(grad_log_var[2], np.inf)
    np.testing.assert_allclose(grad_log_var[3], np.expm1(0.3) / 2, rtol=1e-6)

  def test_kl_at_finite_log_variance_is_unchanged_bit_for_bit(self):
    # The formula before the +inf branch, for either side of the series.
    from math import factorial

    v = np.array([-30.0, -0.7, -0.5, -1e-3, 0.0, 0.2, 0.5, 3.0, 80.0])
    series = np.array([1 / factorial(k + 2) for k in range(13)][::-1])
    small = np.abs(v) < 0.5
    v_small = np.where(small, v, 0)
    expected = jnp.where(
      small,
      jnp.square(v_small) * jnp.polyval(jnp.asarray(series), v_small),
      jnp.expm1(v) - v,
    )
    got = vae_jax.kl_standard_normal_per_dim(np.zeros_like(v), v)
    np.testing.assert_array_equal(got, 0.5 * (expected + 0.0))
