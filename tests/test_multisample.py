"""Multi-sample objectives (VAE-k, IWAE-k, DReG) against NumPy loops and an
exact linear-Gaussian model.

References: Burda, Grosse & Salakhutdinov (2016), "Importance weighted
autoencoders"; Tucker, Lawson, Gu & Maddison (2019), "Doubly reparameterized
gradient estimators for Monte Carlo objectives".
"""

import functools
import math

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tests import references
import vae_jax
from vae_jax import divergences

_LOG_2PI = math.log(2 * math.pi)


class LinearGaussian(references.LinearGaussian):
  """The exact model of :class:`tests.references.LinearGaussian`, with
  ``q_mean``, ``q_log_variance``: an imperfect q, the posterior mean shifted
  by half a posterior std and its variance 1.5x."""

  def __init__(self, seed=0, **kwargs):
    super().__init__(seed, **kwargs)
    self.q_mean = self.post_mean + 0.5 * np.sqrt(self.post_var)
    self.q_log_variance = np.log(1.5 * self.post_var)
    self.theta = (jnp.asarray(self.w), jnp.asarray(self.b))

  def log_likelihood_fn(self, theta):
    w, b = theta
    return lambda x, z: vae_jax.gaussian_log_likelihood(
      x, w @ z + b, self.sigma2
    )

  def expected_elbo(self):
    """E_q log p(x | z) - KL(q || p): the trace term of a linear mean is exact."""
    var = np.exp(self.q_log_variance)
    mean_term = stats.norm.logpdf(
      self.x, self.w @ self.q_mean + self.b, math.sqrt(self.sigma2)
    ).sum()
    trace = np.sum(np.sum(self.w**2, axis=0) * var) / (2 * self.sigma2)
    kl = 0.5 * np.sum(var + self.q_mean**2 - 1 - self.q_log_variance)
    return mean_term - trace - kl


def _numpy_log_weights(m, mean, log_variance, eps):
  """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k), one loop per sample."""
  log_weights = []
  for e in np.asarray(eps, np.float64):
    z = mean + np.exp(log_variance / 2) * e
    residual = m.x - m.w @ z - m.b
    log_lik = -0.5 * np.sum(
      residual**2 / m.sigma2 + math.log(m.sigma2) + _LOG_2PI
    )
    log_prior = -0.5 * np.sum(z**2 + _LOG_2PI)
    log_q = -0.5 * np.sum(e**2 + log_variance + _LOG_2PI)
    log_weights.append((log_lik, log_lik + log_prior - log_q))
  return np.array(log_weights).T  # [2, K]: log-likelihoods, log-weights


def _numpy_dreg_gradients(m, mean, log_variance, eps):
  """Tucker et al. (2019), eq. for IWAE, written out for the linear Gaussian:
  encoder sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi), decoder
  sum_k w~_k grad_(W, b) log p(x | z_k)."""
  _, log_w = _numpy_log_weights(m, mean, log_variance, eps)
  w_tilde = np.exp(log_w - log_w.max())
  w_tilde /= w_tilde.sum()
  std = np.exp(log_variance / 2)
  g_mean, g_log_var = np.zeros_like(mean), np.zeros_like(mean)
  g_w, g_b = np.zeros_like(m.w), np.zeros_like(m.b)
  for weight, e in zip(w_tilde, np.asarray(eps, np.float64)):
    z = mean + std * e
    residual = (m.x - m.w @ z - m.b) / m.sigma2
    # d/dz [log p(x | z) + log p(z) - log q(z)], q's parameters held fixed.
    dlogw_dz = m.w.T @ residual - z + (z - mean) / std**2
    g_mean += weight**2 * dlogw_dz
    g_log_var += weight**2 * dlogw_dz * 0.5 * std * e
    g_w += weight * np.outer(residual, z)
    g_b += weight * residual
  return (g_w, g_b), (g_mean, g_log_var)


def _objective(name):
  """(log_likelihood_fn, x, mean, log_variance, eps) -> one of the four."""
  return {
    "elbo": vae_jax.multi_sample_elbo,
    "elbo_monte_carlo": functools.partial(
      vae_jax.multi_sample_elbo, kl="monte_carlo"
    ),
    "iwae": vae_jax.iwae_objective,
    "iwae_dreg": functools.partial(vae_jax.iwae_objective, gradient="dreg"),
  }[name]


_OBJECTIVES = ("elbo", "elbo_monte_carlo", "iwae", "iwae_dreg")


class BoundValueTest(parameterized.TestCase):
  @parameterized.product(
    dtype=(np.float32, np.float64), decoder=("bernoulli", "gaussian")
  )
  def test_one_sample_equals_the_single_sample_elbo_bit_for_bit(
    self, dtype, decoder
  ):
    for seed in range(3):
      rng = np.random.default_rng(seed)
      w = rng.normal(size=(20, 4)).astype(dtype)
      b = rng.normal(size=20).astype(dtype)
      x = (rng.random(20) < 0.5).astype(dtype)
      mean, log_var = rng.normal(size=(2, 4)).astype(dtype)
      eps = rng.normal(size=(1, 4)).astype(dtype)
      if decoder == "bernoulli":
        of_output = vae_jax.bernoulli_log_likelihood
      else:
        of_output = lambda x, out: vae_jax.gaussian_log_likelihood(x, out, 0.5)
      log_lik = lambda x, z: of_output(x, w @ z + b)
      z = divergences.reparameterize(mean, log_var, eps[0])
      single = -vae_jax.negative_elbo(
        x, w @ z + b, mean, log_var, likelihood=of_output
      )
      by_hand = log_lik(x, z) - vae_jax.kl_standard_normal(mean, log_var)
      got = vae_jax.multi_sample_elbo(log_lik, x, mean, log_var, eps)
      np.testing.assert_array_equal(got, single, strict=True)
      np.testing.assert_array_equal(got, by_hand, strict=True)
      # Under jit, to rounding: XLA may fuse the two programs differently.
      jitted = jax.jit(vae_jax.multi_sample_elbo, static_argnums=0)
      elbo = lambda mean, z: (
        -vae_jax.negative_elbo(
          x, w @ z + b, mean, log_var, likelihood=of_output
        )
      )
      np.testing.assert_allclose(
        jitted(log_lik, x, mean, log_var, eps),
        jax.jit(elbo)(mean, z),
        rtol=4 * np.finfo(dtype).eps,
      )
      # With the Monte Carlo KL, K = 1 of all three is the one log-weight.
      log_w = vae_jax.log_importance_weight(log_lik(x, z), z, mean, log_var)
      for name in ("elbo_monte_carlo", "iwae", "iwae_dreg"):
        np.testing.assert_array_equal(
          _objective(name)(log_lik, x, mean, log_var, eps), log_w, strict=True
        )

  @parameterized.parameters(1, 5, 64)
  def test_bounds_match_float64_numpy_loops(self, k):
    m = LinearGaussian(seed=1)
    eps = np.random.default_rng(k).normal(size=(k, 3))
    log_lik, log_w = _numpy_log_weights(m, m.q_mean, m.q_log_variance, eps)
    var = np.exp(m.q_log_variance)
    kl = 0.5 * np.sum(var + m.q_mean**2 - 1 - m.q_log_variance)
    shift = log_w.max()
    expected = {
      "elbo": np.mean(log_lik) - kl,
      "elbo_monte_carlo": np.mean(log_w),
      "iwae": shift + math.log(np.mean(np.exp(log_w - shift))),
    }
    expected["iwae_dreg"] = expected["iwae"]
    args = (m.x, m.q_mean, m.q_log_variance, eps)
    got = jax.jit(
      lambda *args: {
        name: _objective(name)(m.log_likelihood_fn(m.theta), *args)
        for name in _OBJECTIVES
      }
    )(*args)
    for name in _OBJECTIVES:
      np.testing.assert_allclose(got[name], expected[name], rtol=1e-13)
    # One forward value; only the gradients differ.
    self.assertEqual(float(got["iwae"]), float(got["iwae_dreg"]))
    self.assertGreaterEqual(float(got["iwae"]), float(got["elbo_monte_carlo"]))

  @pytest.mark.slow
  def test_jit_and_vmap_over_examples_equal_a_loop(self):
    m = LinearGaussian(seed=2)
    rng = np.random.default_rng(3)
    x = m.x + rng.normal(size=(4, 12))
    mean = m.q_mean + 0.3 * rng.normal(size=(4, 3))
    log_var = m.q_log_variance + 0.3 * rng.normal(size=(4, 3))
    eps = rng.normal(size=(4, 6, 3))

    for name in _OBJECTIVES:
      objective = _objective(name)

      def one(theta, x, mean, log_var, eps):
        return objective(m.log_likelihood_fn(theta), x, mean, log_var, eps)

      # A loss the trainer would take: minus the batch mean (cotangent -1/B).
      def loss(theta, mean, log_var):
        values = jax.vmap(one, (None, 0, 0, 0, 0))(theta, x, mean, log_var, eps)
        return -jnp.mean(values), values

      batch = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))
      (_, values), ((g_w, g_b), g_mean, g_log_var) = batch(
        m.theta, mean, log_var
      )
      single = jax.jit(jax.value_and_grad(one, (0, 2, 3)))
      loop = [single(m.theta, *a) for a in zip(x, mean, log_var, eps)]
      np.testing.assert_allclose(values, [v for v, _ in loop], rtol=1e-13)
      for got, expected in (
        (g_w, -np.mean([g[0][0] for _, g in loop], axis=0)),
        (g_b, -np.mean([g[0][1] for _, g in loop], axis=0)),
        (g_mean, -np.stack([g[1] for _, g in loop]) / 4),
        (g_log_var, -np.stack([g[2] for _, g in loop]) / 4),
      ):
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=name)


def _batch_objective(name):
  """(log_likelihoods_fn, mean, log_variance, eps) -> the batch form."""
  return {
    "elbo": vae_jax.multi_sample_elbo_batch,
    "elbo_monte_carlo": functools.partial(
      vae_jax.multi_sample_elbo_batch, kl="monte_carlo"
    ),
    "iwae": vae_jax.iwae_objective_batch,
    "iwae_dreg": functools.partial(
      vae_jax.iwae_objective_batch, gradient="dreg"
    ),
  }[name]


class BatchFormTest(parameterized.TestCase):
  """The batch forms (one call of the likelihood on all B x K samples, as
  training decodes) against ``vmap`` of the per-example functions."""

  def _batch(self):
    m = LinearGaussian(seed=2)
    rng = np.random.default_rng(4)
    x = m.x + rng.normal(size=(4, 12))
    mean = m.q_mean + 0.3 * rng.normal(size=(4, 3))
    log_var = m.q_log_variance + 0.3 * rng.normal(size=(4, 3))
    eps = rng.normal(size=(4, 6, 3))
    return m, x, mean, log_var, eps

  @parameterized.parameters(*_OBJECTIVES)
  def test_values_and_gradients_equal_vmap_of_the_per_example_form(self, name):
    m, x, mean, log_var, eps = self._batch()
    calls = []

    def batch_loss(theta, mean, log_var):
      w, b = theta

      def log_likelihoods(z):  # [B, K, 3] -> [B, K], in one call
        calls.append(z.shape)
        residual = x[:, None] - jnp.einsum("dl,bkl->bkd", w, z) - b
        return -0.5 * jnp.sum(
          residual**2 / m.sigma2 + math.log(m.sigma2) + _LOG_2PI, axis=-1
        )

      values = _batch_objective(name)(log_likelihoods, mean, log_var, eps)
      return -jnp.mean(values), values

    def vmap_loss(theta, mean, log_var):
      one = lambda *a: _objective(name)(m.log_likelihood_fn(theta), *a)
      values = jax.vmap(one)(x, mean, log_var, eps)
      return -jnp.mean(values), values

    grad = lambda f: jax.jit(jax.value_and_grad(f, (0, 1, 2), has_aux=True))
    (_, got), got_grads = grad(batch_loss)(m.theta, mean, log_var)
    (_, want), want_grads = grad(vmap_loss)(m.theta, mean, log_var)
    assert set(calls) == {(4, 6, 3)}, calls  # all samples at once
    np.testing.assert_allclose(got, want, rtol=1e-13)
    leaves = zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads))
    for a, b in leaves:
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)

  def test_bad_shapes_and_names_are_named(self):
    _, _, mean, log_var, eps = self._batch()
    good = lambda z: jnp.zeros(z.shape[:2])
    for name in _OBJECTIVES:
      fn = _batch_objective(name)
      with self.assertRaisesRegex(
        ValueError, r"eps \[B, K, 3\] with K >= 1 .*got mean \(4, 3\)"
      ):
        fn(good, mean, log_var, eps[:3])
      with self.assertRaisesRegex(ValueError, r"eps \[B, K, 3\]"):
        fn(good, mean, log_var, eps[:, :0])
      with self.assertRaisesRegex(
        ValueError, r"must return log p\(x_b \| z_bk\) of shape \[B, K\]"
      ):
        fn(lambda z: jnp.zeros(z.shape[:1]), mean, log_var, eps)
    with self.assertRaisesRegex(ValueError, r"gradient must be one of"):
      vae_jax.iwae_objective_batch(good, mean, log_var, eps, gradient="x")
    with self.assertRaisesRegex(ValueError, r"kl must be one of"):
      vae_jax.multi_sample_elbo_batch(good, mean, log_var, eps, kl="x")


def _average_bounds(m, name, k, num_keys=300, q=None):
  """The bound at K = k for ``num_keys`` draws of noise: ``[num_keys]``.
  ``q``: ``(mean, log_variance)``, by default the model's."""
  mean, log_variance = q or (m.q_mean, m.q_log_variance)
  eps = jax.random.normal(jax.random.key(k), (num_keys, k, 3), jnp.float64)
  bound = lambda e: _objective(name)(
    m.log_likelihood_fn(m.theta), m.x, mean, log_variance, e
  )
  return np.asarray(jax.jit(jax.vmap(bound))(eps))


class LinearGaussianTest(parameterized.TestCase):
  @pytest.mark.slow
  def test_iwae_bound_rises_with_k_towards_log_marginal(self):
    # L_K rises with K to log p(x) (Burda et al., 2016, theorem 1). A q two
    # posterior stds off and 4x too wide, so that each step is measurable:
    # measured gaps 8.05, 1.41, 0.143, 0.012 nats, steps 15, 10, 3.7 s.e.
    m = LinearGaussian(seed=3)
    q = (m.post_mean + 2 * np.sqrt(m.post_var), np.log(4 * m.post_var))
    ks = (1, 8, 64, 512)
    bounds = [_average_bounds(m, "iwae", k, q=q) for k in ks]
    errors = [b.std(ddof=1) / math.sqrt(len(b)) for b in bounds]
    for j in range(len(ks) - 1):
      step = bounds[j + 1].mean() - bounds[j].mean()
      self.assertGreater(step, 3 * math.hypot(errors[j], errors[j + 1]))
    for b, error in zip(bounds, errors):  # a lower bound, up to its error
      self.assertLess(b.mean(), m.log_px + 3 * error)
    self.assertGreater(m.log_px - bounds[0].mean(), 5)
    self.assertLess(m.log_px - bounds[-1].mean(), 0.05)

  @parameterized.parameters("elbo", "elbo_monte_carlo")
  def test_multi_sample_elbo_is_the_elbo_at_every_k(self, name):
    # VAE-k: the same bound for every k, with a standard error ~ 1 / sqrt(k).
    m = LinearGaussian(seed=4)
    errors = {}
    for k in (1, 16):
      bounds = _average_bounds(m, name, k)
      errors[k] = bounds.std(ddof=1) / math.sqrt(len(bounds))
      self.assertLess(abs(bounds.mean() - m.expected_elbo()), 4 * errors[k])
    self.assertLess(errors[16], errors[1] / 2)


_MODEL_FOR_GRADIENTS = LinearGaussian(seed=7)


@functools.cache
def _gradients(gradient, k, num_keys=2000):
  """Per-key gradients at q, ``(decoder [N, W and b], encoder [N, 2 L])``:
  ``gradient`` names an :func:`vae_jax.iwae_objective` estimator, or is
  ``"biased"`` for :func:`_sticking_the_landing`."""
  m = _MODEL_FOR_GRADIENTS

  def bound(theta, phi, eps):
    log_lik = m.log_likelihood_fn(theta)
    if gradient == "biased":
      return _sticking_the_landing(m)(log_lik, phi, eps)
    return vae_jax.iwae_objective(
      log_lik, m.x, phi[0], phi[1], eps, gradient=gradient
    )

  phi = jnp.stack([jnp.asarray(m.q_mean), jnp.asarray(m.q_log_variance)])
  eps = jax.random.normal(jax.random.key(k), (num_keys, k, 3), jnp.float64)
  value_and_grad = jax.value_and_grad(bound, argnums=(0, 1))
  values, ((g_w, g_b), g_phi) = jax.jit(
    jax.vmap(value_and_grad, (None, None, 0))
  )(m.theta, phi, eps)
  decoder = np.concatenate([g_w.reshape(num_keys, -1), g_b], axis=1)
  return np.asarray(values), decoder, np.asarray(g_phi).reshape(num_keys, -1)


def _sticking_the_landing(m):
  """Roeder et al. (2017)'s "sticking the landing" on the IWAE: q's score
  removed but w~_k not squared, which biases it (Tucker et al., 2019); here
  only to show that the unbiasedness test can tell."""

  def bound(log_lik, phi, eps):
    z = divergences.reparameterize(phi[0], phi[1], eps)
    q = jax.lax.stop_gradient(phi)
    log_w = jax.vmap(
      lambda z: vae_jax.log_importance_weight(log_lik(m.x, z), z, q[0], q[1])
    )(z)
    return vae_jax.importance_weighted_bound(log_w)

  return bound


def _z_scores(a, b):
  """Mean of the paired differences over its standard error, per component."""
  difference = a - b
  standard_error = difference.std(axis=0, ddof=1) / math.sqrt(len(a))
  return difference.mean(axis=0) / standard_error


class DregTest(parameterized.TestCase):
  def test_gradients_are_the_formula_per_key(self):
    m = LinearGaussian(seed=5)
    # A q further from p(z | x), so that every term of the formula counts.
    mean, log_var = m.q_mean + 0.2, m.q_log_variance - 0.3

    def bound(theta, mean, log_var, eps):
      log_lik = m.log_likelihood_fn(theta)
      return vae_jax.iwae_objective(
        log_lik, m.x, mean, log_var, eps, gradient="dreg"
      )

    grad = jax.jit(jax.grad(bound, argnums=(0, 1, 2)))
    for seed in range(3):
      eps = np.random.default_rng(seed).normal(size=(8, 3))
      got = grad(m.theta, mean, log_var, eps)
      (g_w, g_b), encoder = _numpy_dreg_gradients(m, mean, log_var, eps)
      for a, b in zip(jax.tree.leaves(got), (g_w, g_b, *encoder)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)

  def test_value_and_decoder_gradient_equal_reparam_per_key(self):
    values, decoder, _ = _gradients("reparam", 16, 200)
    dreg_values, dreg_decoder, _ = _gradients("dreg", 16, 200)
    np.testing.assert_array_equal(dreg_values, values)
    np.testing.assert_array_equal(dreg_decoder, decoder)

  @pytest.mark.slow
  def test_encoder_gradient_is_unbiased_for_the_reparam_one(self):
    # Paired over 2000 draws of noise, per component: measured |z| <= 1.5.
    _, _, reparam = _gradients("reparam", 16)
    _, _, dreg = _gradients("dreg", 16)
    self.assertLess(np.max(np.abs(_z_scores(dreg, reparam))), 4)
    # The same test rejects a biased estimator: measured |z| 20 to 70.
    _, _, biased = _gradients("biased", 16)
    self.assertGreater(np.min(np.abs(_z_scores(biased, reparam))), 8)

  @pytest.mark.slow
  def test_encoder_gradient_has_lower_variance_and_rising_snr(self):
    ratios, snr = {}, {}
    for k in (16, 64):
      _, _, reparam = _gradients("reparam", k)
      _, _, dreg = _gradients("dreg", k)
      var_reparam, var_dreg = reparam.var(axis=0), dreg.var(axis=0)
      ratios[k] = var_dreg.sum() / var_reparam.sum()
      self.assertTrue(np.all(var_dreg < var_reparam / 10))
      snr[k] = np.abs(dreg.mean(axis=0)) / dreg.std(axis=0)
    # Measured: 0.0017 at K = 16, 0.0001 at K = 64 (q is near p(z | x)).
    self.assertLess(ratios[16], 0.01)
    self.assertLess(ratios[64], ratios[16])
    self.assertTrue(np.all(snr[64] > snr[16]))  # Rainforth et al. (2018)

  def test_zero_cotangent_gives_zero_gradient_not_nan(self):
    m = LinearGaussian(seed=9)
    log_lik = m.log_likelihood_fn(m.theta)
    bound = lambda mean: vae_jax.iwae_objective(
      log_lik, m.x, mean, m.q_log_variance, np.ones((4, 3)), gradient="dreg"
    )
    grads = jax.jit(jax.grad(lambda mean: 0.0 * bound(mean)))(m.q_mean)
    np.testing.assert_array_equal(grads, np.zeros(3))


class ValidationTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("no_sample_axis", np.zeros(3), r"eps must have shape \[K, 3\]"),
    ("no_samples", np.zeros((0, 3)), r"with K >= 1 .*got \(0, 3\)"),
    ("wrong_latent", np.zeros((4, 2)), r"eps must have shape \[K, 3\]"),
  )
  def test_eps_shape(self, eps, message):
    m = LinearGaussian()
    log_lik = m.log_likelihood_fn(m.theta)
    for name in _OBJECTIVES:
      fn = functools.partial(_objective(name), log_lik, m.x)
      for f in (fn, jax.jit(fn)):
        with self.assertRaisesRegex(ValueError, message):
          f(m.q_mean, m.q_log_variance, eps)

  def test_names_of_the_estimator_and_the_kl_form(self):
    m = LinearGaussian()
    args = (
      m.log_likelihood_fn(m.theta),
      m.x,
      m.q_mean,
      m.q_mean,
      np.ones((2, 3)),
    )
    with self.assertRaisesRegex(
      ValueError, r"gradient must be one of \('reparam', 'dreg'\), got 'score'"
    ):
      vae_jax.iwae_objective(*args, gradient="score")
    with self.assertRaisesRegex(
      ValueError, r"kl must be one of .*'monte_carlo'\), got 'analytic'"
    ):
      vae_jax.multi_sample_elbo(*args, kl="analytic")

  def test_log_likelihood_fn_must_return_a_scalar(self):
    m = LinearGaussian()
    per_pixel = lambda x, z: -jnp.square(x - m.w @ z)
    for name in _OBJECTIVES:
      with self.assertRaisesRegex(
        ValueError, r"log_likelihood_fn\(x, z\) must return one scalar"
      ):
        _objective(name)(per_pixel, m.x, m.q_mean, m.q_mean, np.ones((2, 3)))

  def test_noise_and_posterior_dtypes_and_shapes(self):
    m = LinearGaussian()
    log_lik = m.log_likelihood_fn(m.theta)
    with self.assertRaisesRegex(TypeError, r"eps has dtype int"):
      vae_jax.iwae_objective(
        log_lik, m.x, m.q_mean, m.q_mean, np.ones((2, 3), int)
      )
    with self.assertRaisesRegex(
      ValueError, r"log_variance has shape \(2,\) but mean has shape \(3,\)"
    ):
      vae_jax.multi_sample_elbo(
        log_lik, m.x, m.q_mean, np.zeros(2), np.ones((2, 3))
      )
