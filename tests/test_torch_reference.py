"""Optional cross-checks against PyTorch's own losses and distributions.

Skipped unless torch is installed (``pip install -r requirements-torch.txt``).
Every test compares numbers: the batch mean of our per-example functions
(``vae_jax.batched``) against torch's ``reduction='sum'`` divided by B, or our
per-example values against ``log_prob(...).sum(-1)``.
"""

import jax
import mpmath
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import distributions as td
import torch.nn.functional as F

import vae_jax

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
  """numpy -> torch: same dtype and values (shares the memory)."""
  return torch.from_numpy(np.ascontiguousarray(a))


def _np(t):
  return t.detach().numpy()


def _assert_close(got, expected, dtype, rtol=None, atol=0.0):
  got = np.asarray(got)
  assert got.dtype == dtype, (got.dtype, dtype)
  rtol = RTOL[dtype] if rtol is None else rtol
  np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


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
  per_example = _np(
    F.binary_cross_entropy(_t(probs), _t(x), reduction="none").sum(-1)
  )
  got = vae_jax.batched(
    vae_jax.bernoulli_log_likelihood_from_probs, reduction="none"
  )(x, probs)
  _assert_close(-got, per_example, dtype)
  # Hand check of the clamp on one example: x=0,p=0 -> 0; x=1,p=0 -> 100;
  # x=0,p=1 -> 100; x=1,p=1 -> 0.
  one = np.array([0.0, 1.0, 0.0, 1.0], dtype)
  ends = np.array([0.0, 0.0, 1.0, 1.0], dtype)
  torch_ends = _np(F.binary_cross_entropy(_t(ends), _t(one), reduction="sum"))
  np.testing.assert_allclose(torch_ends, 200.0)
  _assert_close(
    -vae_jax.bernoulli_log_likelihood_from_probs(one, ends), torch_ends, dtype
  )


def test_bce_from_probs_tiny_probs_float64():
  # Normal (not subnormal) probabilities whose log is below -100: torch and we
  # both clamp; those just above -100 are not clamped.
  probs = np.array([[1e-300, 1e-50, 1e-43, 4e-44, 1e-30, 0.5]])
  x = np.array([[1.0, 1.0, 1.0, 1.0, 0.7, 0.2]])
  expected = _np(F.binary_cross_entropy(_t(probs), _t(x), reduction="sum"))
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood_from_probs)(x, probs)
  _assert_close(-got, expected, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_from_probs_small_p_matches_torch_log1p(dtype):
  # One pixel per example, x = 0: the value is (1 - x) log(1 - p) alone.
  probs = np.array([1e-3, 1e-6, 1e-10, 1e-17, 1e-30], dtype)[:, None]
  x = np.zeros_like(probs)
  expected = _np(F.binary_cross_entropy(_t(probs), _t(x), reduction="none"))
  got = vae_jax.batched(
    vae_jax.bernoulli_log_likelihood_from_probs, reduction="none"
  )(x, probs)
  _assert_close(-got, expected[:, 0], dtype, rtol=4 * np.finfo(dtype).eps)


# --- Bernoulli from logits: F.binary_cross_entropy_with_logits --------------

EXTREME_LOGITS = [1e3, -1e3, 104.0, -104.0, 88.0, -88.0, 30.0, -30.0, 0.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_matches_torch(dtype):
  rng = _rng(2)
  logits = rng.normal(0.0, 4.0, (B, D)).astype(dtype)
  logits[:, : len(EXTREME_LOGITS)] = EXTREME_LOGITS
  logits[:, len(EXTREME_LOGITS) : 2 * len(EXTREME_LOGITS)] = EXTREME_LOGITS
  x = rng.random((B, D)).astype(dtype)
  x[:, : len(EXTREME_LOGITS)] = 0.0
  x[:, len(EXTREME_LOGITS) : 2 * len(EXTREME_LOGITS)] = 1.0
  expected = (
    _np(F.binary_cross_entropy_with_logits(_t(logits), _t(x), reduction="sum"))
    / B
  )
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood)(x, logits)
  assert np.isfinite(got)
  _assert_close(-got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("logit", EXTREME_LOGITS)
@pytest.mark.parametrize("target", [0.0, 0.3, 1.0])
def test_bce_with_logits_single_extreme_pixel(dtype, logit, target):
  # One pixel, so no summation: each term is compared on its own, including
  # the tiny ones (x = 0, l = -30: softplus(-30) = 9.36e-14).
  x = np.full((1, 1), target, dtype)
  logits = np.full((1, 1), logit, dtype)
  expected = _np(
    F.binary_cross_entropy_with_logits(_t(logits), _t(x), reduction="sum")
  )
  got = vae_jax.batched(vae_jax.bernoulli_log_likelihood)(x, logits)
  eps = np.finfo(dtype).eps
  # torch computes (1 - x) l - log_sigmoid(l), which cancels two numbers of
  # size |l| when the result is tiny: its error is absolute, ~eps |l| (it
  # returns 0 for x = 0, l = -104 where the value is 6.8e-46, and is 1.3% off
  # at l = -30 in float64). So against torch: eps |l| absolute.
  _assert_close(
    -got, expected, dtype, rtol=4 * eps, atol=4 * eps * (1 + abs(logit))
  )
  # Ours has no such cancellation: it matches the exact value, computed in
  # float64 with logaddexp, to a few ulp relative. The only exception is a
  # float32 result below the smallest normal (x = 1, l = 88: e^-88 = 6e-39),
  # which XLA:CPU flushes to zero, hence atol = tiny.
  l64, x64 = np.float64(logit), np.float64(target)
  exact = x64 * np.logaddexp(0, -l64) + (1 - x64) * np.logaddexp(0, l64)
  _assert_close(-got, exact, dtype, rtol=4 * eps, atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_gradient_matches_torch_autograd(dtype):
  rng = _rng(3)
  logits = rng.normal(0.0, 4.0, (B, D)).astype(dtype)
  logits[:, : len(EXTREME_LOGITS)] = EXTREME_LOGITS
  x = rng.random((B, D)).astype(dtype)
  x[:, :3] = [0.0, 1.0, 0.5]
  logits_t = _t(logits.copy()).requires_grad_(True)
  loss = F.binary_cross_entropy_with_logits(logits_t, _t(x), reduction="sum")
  (torch_grad,) = torch.autograd.grad(loss, logits_t)
  loss_fn = lambda l: (
    -vae_jax.batched(vae_jax.bernoulli_log_likelihood, reduction="sum")(x, l)
  )
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
  assert nll.dtype == dtype
  constant = np.asarray(0.5 * D * np.log(np.pi), dtype)
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
    x, mean, sigma2=sigma2_arr
  )
  _assert_close(got, expected, dtype)
  # The default batch reduction is the mean of those.
  _assert_close(
    vae_jax.batched(vae_jax.gaussian_log_likelihood)(
      x, mean, sigma2=sigma2_arr
    ),
    expected.mean(),
    dtype,
  )


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_per_pixel_sigma2_matches_normal_log_prob(dtype):
  rng = _rng(6)
  x = rng.random((B, D)).astype(dtype)
  mean = rng.random((B, D)).astype(dtype)
  shared = np.exp(rng.uniform(-6, 2, D)).astype(dtype)  # one per pixel
  per_example = np.exp(rng.uniform(-6, 2, (B, D))).astype(dtype)
  for sigma2, batched_args in ((shared, ()), (per_example, (per_example,))):
    normal = td.Normal(_t(mean), torch.sqrt(_t(sigma2)))
    expected = _np(normal.log_prob(_t(x)).sum(-1))
    fn = vae_jax.batched(vae_jax.gaussian_log_likelihood, reduction="none")
    if batched_args:
      got = fn(x, mean, *batched_args)  # sigma2 vmapped with the batch
    else:
      got = fn(x, mean, sigma2=sigma2)  # sigma2 shared by the batch
    _assert_close(got, expected, dtype)


# --- Continuous Bernoulli -----------------------------------------------------
#
# torch.distributions.ContinuousBernoulli is itself inexact in three places,
# all measured against mpmath at 50 digits (see benchmarks/accuracy.py for
# ours). With p = sigmoid(l) rounded to the dtype first:
#   * |l| < 4e-3 (0.499 < p < 0.501): a Taylor series in p - 1/2; ~0.5 ulp.
#   * outside that window, log(2 artanh(1 - 2p) / (1 - 2p)): ~eps / (2 |l|)
#     absolute near the window (66 ulp of float64 at l = 5e-3), and
#     ~eps e^|l| / (2 |l|) for large |l|, where 1 - p has lost its digits
#     (710 ulp at l = 10 in float64, 4e-3 absolute at l = 15 in float32).
#   * |l| > log((1 - eps) / eps) (36.04 in float64, 15.94 in float32): p is
#     clamped to [eps, 1 - eps], so its log-normaliser stops at log C(36.04) =
#     3.585 (float64) while the true log C(50) = log 50 = 3.912.
# The tolerances below are that error model, not a blanket loosening.


def _torch_probs_limit(dtype):
  eps = np.finfo(dtype).eps
  return float(np.log((1 - eps) / eps))


def _torch_cb_atol(logits, dtype):
  """Absolute error bound of torch's log C(l) (plus its BCE part), per pixel."""
  eps = np.finfo(dtype).eps
  a = np.abs(logits.astype(np.float64))
  outside_window = np.where(a >= 3.9e-3, 1 / np.maximum(a, 3.9e-3), 0.0)
  return eps * (8 + a + outside_window + np.exp(a) / np.maximum(a, 1.0))


def _mp_cb_log_normalizer(l):
  """log(l / (2 sigmoid(l) - 1)) at 50 digits; log 2 at l = 0."""
  with mpmath.workdps(50):
    l = mpmath.mpf(float(l))
    if l == 0:
      return float(mpmath.log(2))
    return float(mpmath.log(l / (2 / (1 + mpmath.exp(-l)) - 1)))


def _cb_logits(dtype, limit):
  rng = _rng(7)
  logits = rng.uniform(-limit, limit, (B, D))
  near_zero = np.concatenate([[0.0], np.geomspace(1e-8, 0.2, 40)])
  logits[:, :81] = np.concatenate([near_zero, -near_zero[1:]])
  logits[:, 81:87] = [12.0, -12.0, 0.1, -0.1, 3.9e-3, 4.1e-3]  # branch edges
  return logits.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_bernoulli_matches_torch_log_prob(dtype):
  # Logits up to torch's probs clamp (36 in float64, 15.9 in float32): there
  # torch computes the same density, to within the error model above.
  rng = _rng(8)
  logits = _cb_logits(dtype, 0.999 * _torch_probs_limit(dtype))
  x = rng.random((B, D)).astype(dtype)
  x[:, :3] = [0.0, 1.0, 0.5]
  cb = td.ContinuousBernoulli(logits=_t(logits), validate_args=False)
  torch_terms = _np(cb.log_prob(_t(x))).astype(np.float64)
  got = vae_jax.batched(
    vae_jax.continuous_bernoulli_log_likelihood, reduction="none"
  )(x, logits)
  assert got.dtype == dtype
  eps = np.finfo(dtype).eps
  atol = _torch_cb_atol(logits, dtype)
  # Per example: torch's per-pixel errors, plus the rounding of a sum of 784
  # terms (<= ~10 eps sum |terms| for a pairwise or blocked sum).
  bound = atol.sum(-1) + 16 * eps * np.abs(torch_terms).sum(-1)
  error = np.abs(np.asarray(got, np.float64) - torch_terms.sum(-1))
  np.testing.assert_array_less(error, bound)
  # The sums' bound is dominated by the large-|l| pixels, where torch is
  # loose; pixel by pixel (one-pixel examples) each gets its own bound, which
  # is a few ulp for small |l|.
  per_pixel = vae_jax.batched(
    vae_jax.continuous_bernoulli_log_likelihood, reduction="none"
  )(x.reshape(-1, 1), logits.reshape(-1, 1))
  per_pixel_error = np.abs(
    np.asarray(per_pixel, np.float64) - torch_terms.ravel()
  )
  np.testing.assert_array_less(
    per_pixel_error, atol.ravel() + 4 * eps * np.abs(torch_terms.ravel())
  )


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_bernoulli_beyond_torch_probs_clamp(dtype):
  # |l| in (limit, 50]: torch's normaliser saturates at log C(limit); the rest
  # of its log_prob (-BCE with logits) still matches ours, and ours keeps
  # following log C(l) = log|l| + 2 e^-|l| (checked against mpmath).
  limit = _torch_probs_limit(dtype)
  rng = _rng(9)
  magnitudes = np.concatenate([[50.0], rng.uniform(limit * 1.001, 50.0, 31)])
  logits = (magnitudes * np.where(np.arange(32) % 2, 1, -1)).astype(dtype)
  x = rng.random(32).astype(dtype)
  x[:2] = [0.0, 1.0]
  cb = td.ContinuousBernoulli(logits=_t(logits), validate_args=False)
  torch_norm = _np(cb._cont_bern_log_norm())
  np.testing.assert_allclose(
    torch_norm, _mp_cb_log_normalizer(limit), rtol=1e-4
  )  # saturated, up to its own l-rounding
  ours_norm = np.asarray(vae_jax.continuous_bernoulli_log_normalizer(logits))
  exact = np.array([_mp_cb_log_normalizer(l) for l in logits])
  _assert_close(ours_norm, exact, dtype, rtol=2 * np.finfo(dtype).eps)
  # Single-pixel examples: log_prob - torch's log C == ours - our log C.
  torch_ll = _np(cb.log_prob(_t(x))) - torch_norm
  ours_ll = vae_jax.batched(
    vae_jax.continuous_bernoulli_log_likelihood, reduction="none"
  )(x[:, None], logits[:, None])
  _assert_close(ours_ll - ours_norm, torch_ll, dtype, rtol=8 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_bernoulli_log_normalizer_matches_torch(dtype):
  logits = _cb_logits(dtype, 0.999 * _torch_probs_limit(dtype))[:2].ravel()
  cb = td.ContinuousBernoulli(logits=_t(logits), validate_args=False)
  expected = _np(cb._cont_bern_log_norm())
  got = np.asarray(vae_jax.continuous_bernoulli_log_normalizer(logits))
  assert got.dtype == dtype
  error = np.abs(got.astype(np.float64) - expected)
  np.testing.assert_array_less(error, _torch_cb_atol(logits, dtype))
  # Ours against mpmath on the same grid: within 4 ulp of log C everywhere
  # (measured: 2.2), so where the two disagree by more, torch is the one off.
  exact = np.array([_mp_cb_log_normalizer(l) for l in logits])
  np.testing.assert_allclose(got, exact, rtol=0, atol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_continuous_bernoulli_single_pixel_near_zero_logit(dtype):
  # log p(x | l) ~ (x - 1/2) l - l^2 / 24 near l = 0, and both libraries add
  # O(log 2) terms to get it, so agreement is absolute (a few ulp of log 2
  # plus torch's eps / (2 |l|) just outside its window), not relative to the
  # tiny result.
  logits = np.array(
    [0.0, 1e-8, -1e-6, 1e-4, -3e-3, 5e-3, 0.05, -0.2, 1.0], dtype
  )
  for target in (0.0, 0.25, 0.5, 1.0):
    x = np.full_like(logits, target)
    cb = td.ContinuousBernoulli(logits=_t(logits), validate_args=False)
    expected = _np(cb.log_prob(_t(x)))
    got = vae_jax.batched(
      vae_jax.continuous_bernoulli_log_likelihood, reduction="none"
    )(x[:, None], logits[:, None])
    assert got.dtype == dtype
    np.testing.assert_array_less(
      np.abs(np.asarray(got, np.float64) - expected),
      _torch_cb_atol(logits, dtype),
    )


# --- Latent: KL and posterior density ------------------------------------------


def _random_posterior(seed, dtype, latent=32):
  """Returns (rng, mean, log_variance), each (B, latent), spread over scales."""
  rng = _rng(seed)
  mean = rng.normal(0.0, 2.0, (B, latent)).astype(dtype)
  log_variance = rng.uniform(-10.0, 5.0, (B, latent)).astype(dtype)
  return rng, mean, log_variance


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_standard_normal_matches_torch_kl_divergence(dtype):
  _, mean, log_variance = _random_posterior(9, dtype)
  log_variance[:, :4] = [0.0, 1e-3, -1e-3, 20.0]
  q = td.Normal(_t(mean), torch.exp(0.5 * _t(log_variance)))
  p = td.Normal(
    torch.zeros((), dtype=TORCH_DTYPE[dtype]),
    torch.ones((), dtype=TORCH_DTYPE[dtype]),
  )
  expected = _np(td.kl_divergence(q, p).sum(-1))
  got = vae_jax.batched(vae_jax.kl_standard_normal, reduction="none")(
    mean, log_variance
  )
  # torch goes through sigma = exp(v / 2), squares it and takes log(sigma);
  # its rounding is a few ulp of exp(v) ~ up to e^20, not of the KL itself.
  _assert_close(got, expected, dtype, rtol=10 * RTOL[dtype])
  _assert_close(
    vae_jax.batched(vae_jax.kl_standard_normal)(mean, log_variance),
    expected.mean(),
    dtype,
    rtol=10 * RTOL[dtype],
  )


@pytest.mark.parametrize("dtype", DTYPES)
def test_diagonal_gaussian_log_density_matches_normal_log_prob(dtype):
  rng, mean, log_variance = _random_posterior(10, dtype)
  z = (mean + np.exp(0.5 * log_variance) * rng.normal(size=mean.shape)).astype(
    dtype
  )
  q = td.Normal(_t(mean), torch.exp(0.5 * _t(log_variance)))
  expected = _np(q.log_prob(_t(z)).sum(-1))
  got = vae_jax.batched(
    vae_jax.diagonal_gaussian_log_density, reduction="none"
  )(z, mean, log_variance)
  _assert_close(got, expected, dtype, rtol=10 * RTOL[dtype])
  std = td.Normal(
    torch.zeros((), dtype=TORCH_DTYPE[dtype]),
    torch.ones((), dtype=TORCH_DTYPE[dtype]),
  )
  _assert_close(
    vae_jax.batched(vae_jax.standard_normal_log_density, reduction="none")(z),
    _np(std.log_prob(_t(z)).sum(-1)),
    dtype,
  )
