"""Optional cross-checks against PyTorch's own losses and distributions.

Skipped unless torch is installed (``pip install -r requirements-torch.txt``).
Every test compares numbers: the batch mean of our per-example functions
(``vae_jax.batched``) against torch's ``reduction='sum'`` divided by B, or our
per-example values against ``log_prob(...).sum(-1)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import distributions as td  # pylint: disable=g-import-not-at-top
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

import vae_jax  # pylint: disable=g-import-not-at-top

# Harmless if conftest.py already did it: float64 must be available here.
jax.config.update("jax_enable_x64", True)

B, D = 16, 784
DTYPES = [np.float32, np.float64]
# Same inputs on both sides, so only the arithmetic differs: a few ulp per
# element, plus the rounding of summing D = 784 terms in a different order.
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _rng(seed):
  return np.random.default_rng(seed)


def _t(a):
  """numpy -> torch, same dtype, no copy of the values' bits."""
  return torch.from_numpy(np.ascontiguousarray(a))


def _np(t):
  return t.detach().numpy()


def _assert_close(got, expected, dtype, rtol=None, atol=0.0):
  got = np.asarray(got)
  assert got.dtype == dtype, (got.dtype, dtype)
  np.testing.assert_allclose(got, expected, rtol=rtol or RTOL[dtype], atol=atol)


# --- Bernoulli from probabilities: F.binary_cross_entropy -------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hard_targets", [True, False])
def test_bce_from_probs_matches_torch(dtype, hard_targets):
  rng = _rng(0)
  probs = rng.uniform(1e-6, 1 - 1e-6, (B, D)).astype(dtype)
  if hard_targets:
    x = (rng.random((B, D)) < 0.5).astype(dtype)
  else:
    x = rng.random((B, D)).astype(dtype)
  expected = _np(F.binary_cross_entropy(_t(probs), _t(x), reduction="sum")) / B
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood_from_probs)(x, probs)
  _assert_close(-got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_from_probs_clamps_like_torch_at_zero_and_one(dtype):
  rng = _rng(1)
  probs = rng.uniform(0.01, 0.99, (B, D)).astype(dtype)
  x = rng.random((B, D)).astype(dtype)  # soft targets in [0, 1)
  x[:, :4] = [0.0, 1.0, 0.0, 1.0]
  # p = 0 and p = 1 exactly, against hard and soft targets: each clamped log
  # contributes -100 times its weight, in torch and in ours.
  probs[:, :8] = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
  per_example = _np(F.binary_cross_entropy(_t(probs), _t(x),
                                           reduction="none").sum(-1))
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood_from_probs,
                        reduction="none")(x, probs)
  _assert_close(-got, per_example, dtype)
  # Hand check of the clamp on one example: x=0,p=0 -> 0; x=1,p=0 -> 100;
  # x=0,p=1 -> 100; x=1,p=1 -> 0.
  one = np.array([0.0, 1.0, 0.0, 1.0], dtype)
  ends = np.array([0.0, 0.0, 1.0, 1.0], dtype)
  torch_ends = _np(F.binary_cross_entropy(_t(ends), _t(one), reduction="sum"))
  np.testing.assert_allclose(torch_ends, 200.0)
  _assert_close(-vae_jax.bernoulli_log_likelihood_from_probs(one, ends),
                torch_ends, dtype)


def test_bce_from_probs_tiny_probs_float64():
  # Normal (not subnormal) probabilities whose log is below -100: torch and we
  # both clamp; those just above -100 are not clamped.
  probs = np.array([[1e-300, 1e-50, 1e-43, 4e-44, 1e-30, 0.5]])
  x = np.array([[1.0, 1.0, 1.0, 1.0, 0.7, 0.2]])
  expected = _np(F.binary_cross_entropy(_t(probs), _t(x), reduction="sum"))
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood_from_probs)(x, probs)
  _assert_close(-got, expected, np.float64)


# --- Bernoulli from logits: F.binary_cross_entropy_with_logits --------------

EXTREME_LOGITS = [1e3, -1e3, 104.0, -104.0, 88.0, -88.0, 30.0, -30.0, 0.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_matches_torch(dtype):
  rng = _rng(2)
  logits = rng.normal(0.0, 4.0, (B, D)).astype(dtype)
  logits[:, :len(EXTREME_LOGITS)] = EXTREME_LOGITS
  logits[:, len(EXTREME_LOGITS):2 * len(EXTREME_LOGITS)] = EXTREME_LOGITS
  x = rng.random((B, D)).astype(dtype)
  x[:, :len(EXTREME_LOGITS)] = 0.0
  x[:, len(EXTREME_LOGITS):2 * len(EXTREME_LOGITS)] = 1.0
  expected = _np(F.binary_cross_entropy_with_logits(
      _t(logits), _t(x), reduction="sum")) / B
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood)(x, logits)
  assert np.isfinite(got)
  _assert_close(-got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("logit", EXTREME_LOGITS)
@pytest.mark.parametrize("target", [0.0, 0.3, 1.0])
def test_bce_with_logits_single_extreme_pixel(dtype, logit, target):
  # One pixel, so no summation: the value of each term is compared on its own,
  # including the tiny ones (e.g. x = 1, l = 30: softplus(-30) = 9.4e-14).
  x = np.full((1, 1), target, dtype)
  logits = np.full((1, 1), logit, dtype)
  expected = _np(F.binary_cross_entropy_with_logits(
      _t(logits), _t(x), reduction="sum"))
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood)(x, logits)
  # 4 ulp: torch computes (1 - x) l + softplus(-l), we x log s(l) + (1 - x)
  # log s(-l); the same function, rounded differently.
  _assert_close(-got, expected, dtype, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_gradient_matches_torch_autograd(dtype):
  rng = _rng(3)
  logits = rng.normal(0.0, 4.0, (B, D)).astype(dtype)
  logits[:, :len(EXTREME_LOGITS)] = EXTREME_LOGITS
  x = rng.random((B, D)).astype(dtype)
  x[:, :3] = [0.0, 1.0, 0.5]
  logits_t = _t(logits.copy()).requires_grad_(True)
  loss = F.binary_cross_entropy_with_logits(logits_t, _t(x), reduction="sum")
  (torch_grad,) = torch.autograd.grad(loss, logits_t)
  loss_fn = lambda l: -vae_jax.batched(  # pylint: disable=g-long-lambda
      vae_jax.bernoulli_log_likelihood, reduction="sum")(x, l)
  ours = jax.grad(loss_fn)(logits)
  # Both are sigmoid(l) - x per element; absolute tolerance for the elements
  # where that difference cancels to ~0.
  _assert_close(ours, _np(torch_grad), dtype, atol=4 * np.finfo(dtype).eps)


# --- Gaussian: F.mse_loss and Normal.log_prob --------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_is_gaussian_with_sigma2_half_minus_its_constant(dtype):
  rng = _rng(4)
  x = rng.random((B, D)).astype(dtype)
  mean = rng.random((B, D)).astype(dtype)
  expected = _np(F.mse_loss(_t(mean), _t(x), reduction="sum")) / B
  # sigma2 = 1/2: -log N = SSE + (D/2) log(2 pi / 2) = SSE + (D/2) log(pi).
  nll = -vae_jax.batched(vae_jax.gaussian_log_likelihood)(x, mean, sigma2=0.5)
  constant = 0.5 * D * np.log(np.pi)
  # SSE / B is ~130 here and the constant ~449: subtracting the constant costs
  # a factor ~4.5 of relative error, hence 10x the default tolerance.
  _assert_close(nll - constant, expected, dtype, rtol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma2", [1e-4, 0.1, 0.5, 1.0, 7.0])
def test_gaussian_scalar_sigma2_matches_normal_log_prob(dtype, sigma2):
  rng = _rng(5)
  x = rng.random((B, D)).astype(dtype)
  mean = rng.random((B, D)).astype(dtype)
  sigma2_arr = np.asarray(sigma2, dtype)
  normal = td.Normal(_t(mean), torch.sqrt(_t(sigma2_arr)))
  expected = _np(normal.log_prob(_t(x)).sum(-1))
  got = vae_jax.batched(vae_jax.gaussian_log_likelihood, reduction="none")(
      x, mean, sigma2=sigma2_arr)
  _assert_close(got, expected, dtype)
  # The default batch reduction is the mean of those.
  _assert_close(vae_jax.batched(vae_jax.gaussian_log_likelihood)(
      x, mean, sigma2=sigma2_arr), expected.mean(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_per_pixel_sigma2_matches_normal_log_prob(dtype):
  rng = _rng(6)
  x = rng.random((B, D)).astype(dtype)
  mean = rng.random((B, D)).astype(dtype)
  shared = np.exp(rng.uniform(-6, 2, D)).astype(dtype)      # one per pixel
  per_example = np.exp(rng.uniform(-6, 2, (B, D))).astype(dtype)
  for sigma2, batched_args in ((shared, ()), (per_example, (per_example,))):
    normal = td.Normal(_t(mean), torch.sqrt(_t(sigma2)))
    expected = _np(normal.log_prob(_t(x)).sum(-1))
    fn = vae_jax.batched(vae_jax.gaussian_log_likelihood, reduction="none")
    if batched_args:
      got = fn(x, mean, *batched_args)          # sigma2 vmapped with the batch
    else:
      got = fn(x, mean, sigma2=sigma2)          # sigma2 shared by the batch
    _assert_close(got, expected, dtype)


# --- Continuous Bernoulli -----------------------------------------------------


def _cb_logits(dtype):
  rng = _rng(7)
  logits = rng.uniform(-50.0, 50.0, (B, D))
  near_zero = np.concatenate([[0.0], np.geomspace(1e-8, 0.2, 40)])
  logits[:, :81] = np.concatenate([near_zero, -near_zero[1:]])
  logits[:, 81:87] = [50.0, -50.0, 12.0, -12.0, 0.1, -0.1]  # our branch edges
  return logits.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_bernoulli_matches_torch_log_prob(dtype):
  rng = _rng(8)
  logits = _cb_logits(dtype)
  x = rng.random((B, D)).astype(dtype)
  x[:, :3] = [0.0, 1.0, 0.5]
  cb = td.ContinuousBernoulli(logits=_t(logits), validate_args=False)
  expected = _np(cb.log_prob(_t(x)).sum(-1))
  got = vae_jax.batched(vae_jax.continuous_bernoulli_log_likelihood,
                        reduction="none")(x, logits)
  # Per-example sums of ~800 terms of magnitude up to ~log(50) + 50: the
  # default tolerances hold relative to the sum's scale.
  scale = np.abs(_np(cb.log_prob(_t(x)))).sum(-1)
  np.testing.assert_array_less(np.abs(got - expected),
                               RTOL[dtype] * scale + 1e-30)
  _assert_close(got, expected, dtype, rtol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_bernoulli_log_normalizer_matches_torch(dtype):
  logits = _cb_logits(dtype).ravel()
  cb = td.ContinuousBernoulli(logits=_t(logits), validate_args=False)
  expected = _np(cb._cont_bern_log_norm())  # pylint: disable=protected-access
  got = np.asarray(vae_jax.continuous_bernoulli_log_normalizer(logits))
  assert got.dtype == dtype
  if dtype == np.float64:
    # torch uses log 2 + 4/3 (p - 1/2)^2 + 104/45 (p - 1/2)^4 inside its window
    # 0.499 < p < 0.501 (|l| < 4e-3) and log(2 artanh(1 - 2p) / (1 - 2p))
    # outside, with p = sigmoid(l) rounded first; both agree with our series
    # and closed form to a few ulp of log 2 (measured: < 3e-16 absolute).
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)
  else:
    # float32: torch rounds p = sigmoid(l) to float32 before its Taylor window
    # or artanh; near l = 0 that quantises (p - 1/2)^2, i.e. log C - log 2 ~
    # l^2/12, so torch is off by up to ~1 ulp of p near p = 1/2. Compared in
    # absolute terms against log C ~ 0.69 .. 3.9, a few float32 ulp.
    np.testing.assert_allclose(got, expected, rtol=0, atol=8e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_bernoulli_single_pixel_near_zero_logit(dtype):
  # log p(x | l) ~ (x - 1/2) l - l^2 / 24 near l = 0 and both libraries add
  # O(log 2) terms to get it, so agreement is absolute (a few ulp of log 2),
  # not relative to the tiny result.
  logits = np.array([0.0, 1e-8, -1e-6, 1e-4, -3e-3, 5e-3, 0.05, -0.2, 1.0],
                    dtype)[:, None]
  for target in (0.0, 0.25, 0.5, 1.0):
    x = np.full_like(logits, target)
    cb = td.ContinuousBernoulli(logits=_t(logits), validate_args=False)
    expected = _np(cb.log_prob(_t(x)).sum(-1))
    got = vae_jax.batched(vae_jax.continuous_bernoulli_log_likelihood,
                          reduction="none")(x, logits)
    _assert_close(got, expected, dtype, rtol=0,
                  atol=8 * np.finfo(dtype).eps)


# --- Latent: KL and posterior density ------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_standard_normal_matches_torch_kl_divergence(dtype):
  rng = _rng(9)
  latent = 32
  mean = rng.normal(0.0, 2.0, (B, latent)).astype(dtype)
  log_variance = rng.uniform(-10.0, 5.0, (B, latent)).astype(dtype)
  log_variance[:, :4] = [0.0, 1e-3, -1e-3, 20.0]
  q = td.Normal(_t(mean), torch.exp(0.5 * _t(log_variance)))
  p = td.Normal(torch.zeros((), dtype=TORCH_DTYPE[dtype]),
                torch.ones((), dtype=TORCH_DTYPE[dtype]))
  expected = _np(td.kl_divergence(q, p).sum(-1))
  got = vae_jax.batched(vae_jax.kl_standard_normal, reduction="none")(
      mean, log_variance)
  # torch goes through sigma = exp(v / 2), squares it and takes log(sigma);
  # its rounding is a few ulp of exp(v) ~ up to e^20, not of the KL itself.
  _assert_close(got, expected, dtype, rtol=10 * RTOL[dtype])
  _assert_close(vae_jax.batched(vae_jax.kl_standard_normal)(mean, log_variance),
                expected.mean(), dtype, rtol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_diagonal_gaussian_log_density_matches_normal_log_prob(dtype):
  rng = _rng(10)
  latent = 32
  mean = rng.normal(0.0, 2.0, (B, latent)).astype(dtype)
  log_variance = rng.uniform(-10.0, 5.0, (B, latent)).astype(dtype)
  z = (mean + np.exp(0.5 * log_variance) * rng.normal(size=(B, latent))
       ).astype(dtype)
  q = td.Normal(_t(mean), torch.exp(0.5 * _t(log_variance)))
  expected = _np(q.log_prob(_t(z)).sum(-1))
  got = vae_jax.batched(vae_jax.diagonal_gaussian_log_density,
                        reduction="none")(z, mean, log_variance)
  _assert_close(got, expected, dtype, rtol=10 * RTOL[dtype])
  std = td.Normal(torch.zeros((), dtype=TORCH_DTYPE[dtype]),
                  torch.ones((), dtype=TORCH_DTYPE[dtype]))
  _assert_close(
      vae_jax.batched(vae_jax.standard_normal_log_density, reduction="none")(z),
      _np(std.log_prob(_t(z)).sum(-1)), dtype)
