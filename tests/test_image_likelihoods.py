"""Likelihoods for 8-bit images against scipy, mpmath and loops; with and without jit.

The discretised logistic and its mixture (Salimans et al., 2017) against
bins of ``scipy.stats.logistic`` and at 60 digits; the Laplace against
``scipy.stats.laplace``.
"""

import functools
import itertools
import math

import jax
from jax import test_util
from jax.experimental import checkify
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from scipy import special, stats

import vae_jax
from vae_jax import checks

LOGISTIC = vae_jax.discretized_logistic_log_likelihood
MIXTURE = vae_jax.discretized_logistic_mixture_log_likelihood
LAPLACE = vae_jax.laplace_log_likelihood
FUNCTIONS = pytest.mark.parametrize(
  "fn", [LOGISTIC, MIXTURE, LAPLACE], ids=lambda f: f.__name__
)
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
EPS32 = float(np.finfo(np.float32).eps)
DTYPES = [np.float32, np.float64]


def _rng(seed=0):
  return np.random.default_rng(seed)


def _jit(fn, **static):
  """jax.jit with static keywords. Eager calls are in test_eager_equals_jit:
  their op-by-op compilation costs about a second per shape."""
  return jax.jit(functools.partial(fn, **static))


def _levels_image(rng, shape, levels, dtype):
  """x on the grid k / (levels - 1), with both edge levels present."""
  k = rng.integers(0, levels, shape)
  k.flat[:2] = [0, levels - 1]
  return (k / (levels - 1)).astype(dtype)


def _scipy_log_mass(x, mean, log_scale, levels):
  """log P(x) per element from the bins of scipy's logistic, in float64."""
  n = levels - 1
  centre = np.round(np.asarray(x, np.float64) * n) / n
  mean = np.asarray(mean, np.float64)
  scale = np.exp(np.asarray(log_scale, np.float64))
  centre, mean, scale = np.broadcast_arrays(centre, mean, scale)
  upper = np.where(centre == 1, np.inf, centre + 0.5 / n)
  lower = np.where(centre == 0, -np.inf, centre - 0.5 / n)
  below = stats.logistic.cdf(upper, mean, scale)
  below -= stats.logistic.cdf(lower, mean, scale)
  # Right of the mean the survival functions keep the digits cdf - cdf loses.
  above = stats.logistic.sf(lower, mean, scale)
  above -= stats.logistic.sf(upper, mean, scale)
  return np.log(np.where(centre <= mean, below, above))


def _float32_bound(ref, mean, log_scale):
  """4 eps32 times the value plus the float32 condition of the bin position:
  (1 + |m|) / s standardised units."""
  return 4 * EPS32 * (np.abs(ref) + (1 + np.abs(mean)) * np.exp(-log_scale))


def _mp_log_mass(k, mean, log_scale, levels):
  """log P(level k) at mpmath's working precision (callers set 60 digits)."""
  n = levels - 1
  m, s = mpmath.mpf(mean), mpmath.exp(mpmath.mpf(log_scale))
  upper = mpmath.mpf(2 * k + 1) / (2 * n)
  lower = mpmath.mpf(2 * k - 1) / (2 * n)
  if mpmath.mpf(k) / n <= m:
    cdf = lambda t: 1 / (1 + mpmath.exp(-(t - m) / s))
    mass = (cdf(upper) if k < n else 1) - (cdf(lower) if k > 0 else 0)
  else:  # right of the mean, from the survival function: no 1 - 1
    sf = lambda t: 1 / (1 + mpmath.exp((t - m) / s))
    mass = (sf(lower) if k > 0 else 1) - (sf(upper) if k < n else 0)
  return mpmath.log(mass)


# --- discretised logistic ----------------------------------------------------


@pytest.mark.parametrize("levels", [4, 256])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
  "shape, log_scale_shape",
  [((3,), ()), ((3,), (3,)), ((28, 28, 1), (28, 28, 1)), ((28, 28, 1), (1, 1))],
)
def test_matches_scipy_logistic_bins(shape, log_scale_shape, dtype, levels):
  rng = _rng(1)
  x = _levels_image(rng, shape, levels, dtype)
  mean = rng.uniform(-0.5, 1.5, shape).astype(dtype)
  log_scale = rng.uniform(-5, 1, log_scale_shape).astype(dtype)
  expected = _scipy_log_mass(x, mean, log_scale, levels).sum()
  got = _jit(LOGISTIC, levels=levels)(x, mean, log_scale)
  assert got.dtype == dtype
  np.testing.assert_allclose(got, expected, rtol=RTOL[dtype])


def test_python_scalar_log_scale_follows_the_dtype_of_x():
  x = np.array([0, 1, 3, 3, 4, 15], np.float32) / np.float32(15)
  got = jax.jit(lambda x: LOGISTIC(x, x, -1.0, levels=16))(x)
  assert got.dtype == np.float32
  expected = _scipy_log_mass(x, x, -1.0, 16).sum()
  np.testing.assert_allclose(got, expected, rtol=RTOL[np.float32])


@pytest.mark.parametrize("levels", [2, 4, 256])
def test_masses_sum_to_one_over_the_levels_in_float32(levels):
  # Means inside and far outside [0, 1], on a bin edge, scales from a
  # fraction of a bin to far wider than [0, 1].
  pairs = np.array(
    [
      (0.5, -3.0),
      (0.0, -10.0),
      (0.5 + 0.5 / 255, -10.0),
      (1.0, 10.0),
      (0.3, 5.0),
      (-2.0, 0.0),
      (3.0, -1.0),
      (-50.0, 2.0),
      (50.0, -10.0),
      (0.7, -6.0),
    ],
    np.float32,
  )
  x = (np.arange(levels) / (levels - 1)).astype(np.float32)
  weights = np.array([0.3, -1.0, 2.0], np.float32)

  def log_masses(mean, log_scale):
    plain = lambda xi: LOGISTIC(xi, mean, log_scale, levels=levels)
    # A three-component mixture around the same mean, for each level.
    means = mean + jnp.array([0.0, 0.2, -0.7], jnp.float32)
    log_scales = log_scale + jnp.array([0.0, 1.0, -2.0], jnp.float32)
    mixture = lambda xi: MIXTURE(xi, weights, means, log_scales, levels=levels)
    return jax.vmap(plain)(x), jax.vmap(mixture)(x)

  plain, mixture = jax.jit(jax.vmap(log_masses))(pairs[:, 0], pairs[:, 1])
  for log_p in (plain, mixture):
    assert log_p.dtype == np.float32
    assert np.all(log_p <= 0)
    np.testing.assert_allclose(jnp.sum(jnp.exp(log_p), axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_extreme_parameters_give_accurate_finite_values_and_gradients():
  # float32, log_scale in [-10, 10], means far outside [0, 1], x at both
  # edges, next to them and in the middle, against 60-digit values and
  # derivatives. The error bound is eps times the value plus the float32
  # condition of the bin's position, (1 + |m|) / s standardised units.
  levels, n = 256, 255
  grid = np.array(
    list(
      itertools.product(
        [0, 1, 127, 128, 254, 255],
        [-50.0, -5.0, -0.5, 0.0, 0.5, 1.0, 1.5, 5.0, 50.0],
        [-10.0, -5.0, -1.0, 0.0, 1.0, 5.0, 10.0],
      )
    )
  )
  x = (grid[:, 0] / n).astype(np.float32)
  mean, log_scale = grid[:, 1].astype(np.float32), grid[:, 2].astype(np.float32)
  fn = functools.partial(LOGISTIC, levels=levels)
  value, (d_mean, d_log_scale) = jax.jit(
    jax.vmap(jax.value_and_grad(fn, (1, 2)))
  )(x, mean, log_scale)
  for got in (value, d_mean, d_log_scale):
    assert got.dtype == np.float32
    assert np.all(np.isfinite(got))

  rows = [(int(k), float(m), float(ls)) for k, m, ls in grid]
  with mpmath.workdps(60):
    want = [_mp_log_mass(k, m, ls, levels) for k, m, ls in rows]
    want_d_mean = [
      mpmath.diff(lambda v: _mp_log_mass(k, v, ls, levels), m)
      for k, m, ls in rows
    ]
    want_d_log_scale = [
      mpmath.diff(lambda v: _mp_log_mass(k, m, v, levels), ls)
      for k, m, ls in rows
    ]
  # The slopes' bounds: d/dm scales the position error by another 1 / s,
  # d/dlog s by the standardised edges (at most the condition number).
  inv_scale = np.exp(-grid[:, 2])
  condition = (1 + np.abs(grid[:, 1])) * inv_scale
  for got, ref, spread in (
    (value, want, condition),
    (d_mean, want_d_mean, (1 + condition) * inv_scale),
    (d_log_scale, want_d_log_scale, 1 + condition),
  ):
    ref = np.array(ref, np.float64)
    bound = 4 * EPS32 * (np.abs(ref) + spread)
    assert np.all(np.abs(got - ref) <= bound), np.max(np.abs(got - ref) / bound)

  # The mixture over the same grid: each element mixes its grid point with
  # a moderate component and with the reflected mean.
  means = np.stack([mean, np.full_like(mean, 0.5), -mean], axis=-1)
  log_scales = np.stack([log_scale, np.zeros_like(mean), -log_scale], -1)
  weights = np.tile(np.array([2.0, -3.0, 0.0], np.float32), (len(x), 1))
  mixture = functools.partial(MIXTURE, levels=levels)
  value, grads = jax.jit(jax.vmap(jax.value_and_grad(mixture, (1, 2, 3))))(
    x, weights, means, log_scales
  )
  for got in (value, *grads):
    assert np.all(np.isfinite(got))


def test_equals_density_times_width_where_the_mass_underflows():
  # Where the bin mass is below 1e-5, PixelCNN++ replaces the difference of
  # sigmoids by log f(centre) + log(bin width), the midpoint rule. For a bin
  # of w standardised units the rule is off by at most w^2 / 24 (the
  # logistic's |g'^2 + g''| <= 1 for g = log f); the product form needs no
  # switch and meets it there. The float32 difference of sigmoids is 0 in
  # some of these bins.
  levels, n = 256, 255
  grid = np.array(
    list(
      itertools.product(
        [1, 64, 128, 200, 254],
        [-30.0, -3.0, 4.0, 30.0],
        [-2.0, -1.0, 0.0, 1.0, 2.0],
      )
    )
  )
  with mpmath.workdps(60):
    log_mass = np.array(
      [float(_mp_log_mass(int(k), m, ls, levels)) for k, m, ls in grid]
    )
  width = np.exp(-grid[:, 2]) / n  # in standardised units
  keep = (log_mass < math.log(1e-5)) & (width < 0.05)
  grid, log_mass, width = grid[keep], log_mass[keep], width[keep]
  assert len(grid) >= 20
  centre, mean, log_scale = grid[:, 0] / n, grid[:, 1], grid[:, 2]
  x, mean32, log_scale32 = (v.astype(np.float32) for v in grid.T)
  x = x / np.float32(n)
  got = jax.jit(jax.vmap(functools.partial(LOGISTIC, levels=levels)))(
    x, mean32, log_scale32
  )
  assert np.all(
    np.abs(got - log_mass) <= _float32_bound(log_mass, mean, log_scale)
  )
  log_bin_width = -math.log(n)
  midpoint = stats.logistic.logpdf(centre, mean, np.exp(log_scale))
  midpoint += log_bin_width
  bound = width**2 / 24 + _float32_bound(midpoint, mean, log_scale)
  assert np.all(np.abs(got - midpoint) <= bound)
  z = lambda t: (t - mean32) / np.exp(log_scale32)
  naive = jax.nn.sigmoid(z(x + 0.5 / n)) - jax.nn.sigmoid(z(x - 0.5 / n))
  assert np.any(naive == 0)


# --- mixture -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, components", [((3,), 1), ((4, 3), 5)])
@pytest.mark.parametrize("levels", [4, 256])
def test_mixture_matches_a_loop_over_components(
  shape, components, dtype, levels
):
  rng = _rng(2)
  x = _levels_image(rng, shape, levels, dtype)
  params = shape + (components,)
  logit_weights = rng.normal(0, 2, params).astype(dtype)
  means = rng.uniform(-0.5, 1.5, params).astype(dtype)
  log_scales = rng.uniform(-6, 1, params).astype(dtype)
  expected = 0.0
  for d in np.ndindex(shape):
    log_w = special.log_softmax(logit_weights[d].astype(np.float64))
    terms = [
      log_w[j] + _scipy_log_mass(x[d], means[d][j], log_scales[d][j], levels)
      for j in range(components)
    ]
    expected += special.logsumexp(terms)
  got = _jit(MIXTURE, levels=levels)(x, logit_weights, means, log_scales)
  assert got.dtype == dtype
  np.testing.assert_allclose(got, expected, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_component_is_the_plain_discretized_logistic(dtype):
  rng = _rng(3)
  x = _levels_image(rng, (5, 4), 256, dtype)
  mean = rng.uniform(-1, 2, (5, 4)).astype(dtype)
  log_scale = rng.uniform(-8, 3, (5, 4)).astype(dtype)
  logit = rng.normal(0, 5, (5, 4, 1)).astype(dtype)  # any weight is 1
  np.testing.assert_allclose(
    _jit(MIXTURE)(x, logit, mean[..., None], log_scale[..., None]),
    _jit(LOGISTIC)(x, mean, log_scale),
    rtol=RTOL[dtype],
  )


# --- Laplace -----------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-2, 0.1, 1.0, 7.0])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3,), (28, 28, 1)])
def test_laplace_matches_scipy_logpdf(shape, dtype, scale):
  rng = _rng(4)
  x = rng.random(shape).astype(dtype)
  mean = rng.random(shape).astype(dtype)
  expected = stats.laplace.logpdf(x, mean, scale).sum()
  got = _jit(LAPLACE)(x, mean, scale)
  assert got.dtype == dtype
  np.testing.assert_allclose(got, expected, rtol=RTOL[dtype])


@pytest.mark.parametrize(
  "scale_shape", [(28, 28, 1), (1, 1, 1), (28, 1, 1), (1,)]
)
def test_laplace_per_pixel_scale_broadcasts(scale_shape):
  rng = _rng(5)
  x, mean = rng.random((28, 28, 1)), rng.random((28, 28, 1))
  scale = rng.uniform(0.05, 2, scale_shape)
  expected = stats.laplace.logpdf(x, mean, scale).sum()
  np.testing.assert_allclose(
    _jit(LAPLACE)(x, mean, scale), expected, rtol=1e-12
  )


def test_laplace_keeps_its_constant_and_its_best_scale_is_the_mae():
  x = np.zeros(784)
  for scale in (0.01, 0.5, 3.0):
    np.testing.assert_allclose(
      _jit(LAPLACE)(x, x, scale), -784 * math.log(2 * scale), rtol=1e-13
    )
  # At a fixed mean the maximum-likelihood b is the mean absolute error.
  rng = _rng(6)
  x, mean = rng.random(50), rng.random(50)
  mae = np.mean(np.abs(x - mean))
  value_and_slope = jax.jit(jax.value_and_grad(LAPLACE, 2))
  at_mae, slope = value_and_slope(x, mean, mae)
  assert abs(float(slope)) < 1e-10
  assert float(at_mae) > float(value_and_slope(x, mean, 1.1 * mae)[0])


# --- all three: gradients, vmap, jit -----------------------------------------


def _moderate_args(rng, shape=(6,), components=3, levels=16):
  x = _levels_image(rng, shape, levels, np.float64)
  params = shape + (components,)
  return {
    LOGISTIC: (x, rng.uniform(-0.5, 1.5, shape), rng.uniform(-3, 0, shape)),
    MIXTURE: (
      x,
      rng.normal(0, 1, params),
      rng.uniform(-0.5, 1.5, params),
      rng.uniform(-3, 0, params),
    ),
    LAPLACE: (x, x + rng.uniform(0.05, 0.2, shape), rng.uniform(0.1, 1, shape)),
  }


def _fixed(fn):
  return functools.partial(fn, levels=16) if fn is not LAPLACE else fn


@pytest.mark.slow
@FUNCTIONS
def test_gradients_match_finite_differences(fn):
  # float64, every parameter argument, forward and reverse mode.
  x, *params = _moderate_args(_rng(7))[fn]
  test_util.check_grads(
    jax.jit(lambda *p: _fixed(fn)(x, *p)),
    params,
    order=1,
    modes=("fwd", "rev"),
    atol=1e-6,
  )


def _stacked_batch(fn, size=4):
  rng = _rng(8)
  batch = [_moderate_args(rng)[fn] for _ in range(size)]
  return [np.stack(arg).astype(np.float32) for arg in zip(*batch)]


@FUNCTIONS
def test_vmap_equals_a_python_loop(fn):
  stacked = _stacked_batch(fn)
  one = jax.jit(_fixed(fn))
  loop = [one(*(a[i] for a in stacked)) for i in range(len(stacked[0]))]
  for batched in (
    jax.jit(jax.vmap(_fixed(fn))),
    jax.jit(vae_jax.batched(_fixed(fn), "none")),
  ):
    got = batched(*stacked)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, loop, rtol=1e-6)


@pytest.mark.slow
@FUNCTIONS
def test_eager_equals_jit(fn):
  # Slow only for JAX's op-by-op compilation of the eager call.
  args = [a[0] for a in _stacked_batch(fn, 1)]
  np.testing.assert_allclose(
    _fixed(fn)(*args), jax.jit(_fixed(fn))(*args), rtol=1e-6
  )


# --- bad input ---------------------------------------------------------------

X = np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32)  # the grid of 4 levels
P = np.zeros(4, np.float32)
W = np.zeros((4, 2), np.float32)
LOGISTIC4 = functools.partial(LOGISTIC, levels=4)
MIXTURE4 = functools.partial(MIXTURE, levels=4)

# Shapes, dtypes and levels: raised eagerly and when tracing under jit alike.
TRACE_CASES = [
  ("mean_shape", LOGISTIC4, (X, P[:3], 0.0), ValueError, r"mean has shape \(3,\) but x"),
  ("log_scale_shape", LOGISTIC4, (X, X, P[:3]), ValueError, r"log_scale has shape \(3,\), which does not broadcast"),
  ("log_scale_grows_x", LOGISTIC4, (X, X, np.zeros((2, 4), np.float32)), ValueError, r"log_scale has shape \(2, 4\)"),
  ("int_x", LOGISTIC4, (np.arange(4), X, 0.0), TypeError, r"x has dtype int"),
  ("levels_one", functools.partial(LOGISTIC, levels=1), (X, X, 0.0), ValueError, r"levels must be an int >= 2, got 1"),
  ("levels_float", functools.partial(LOGISTIC, levels=4.0), (X, X, 0.0), TypeError, r"levels must be a Python int"),
  ("levels_bool", functools.partial(MIXTURE, levels=True), (X, W, W, W), TypeError, r"levels must be a Python int"),
  ("means_shape", MIXTURE4, (X, W, W[:3], W[:3]), ValueError, r"means has shape \(3, 2\) but logit_weights"),
  ("mixture_lacks_an_axis", MIXTURE4, (X, P, P, P), ValueError, r"logit_weights has shape \(4,\), but x has shape \(4,\)"),
  ("mixture_other_example", MIXTURE4, (X[:3], W, W, W), ValueError, r"logit_weights has shape \(4, 2\), but x has shape \(3,\)"),
  ("no_components", MIXTURE4, (X, W[:, :0], W[:, :0], W[:, :0]), ValueError, r"logit_weights has an empty trailing axis"),
  ("int_log_scales", MIXTURE4, (X, W, W, W.astype(int)), TypeError, r"log_scales has dtype"),
  ("laplace_mean_shape", LAPLACE, (X, P[:3], 1.0), ValueError, r"mean has shape \(3,\)"),
  ("laplace_scale_shape", LAPLACE, (X, X, np.ones(3)), ValueError, r"scale has shape \(3,\), which does not broadcast"),
  ("laplace_list_x", LAPLACE, ([0.5] * 4, X, 1.0), TypeError, r"x must be a jax.Array or numpy.ndarray"),
]  # fmt: skip


@pytest.mark.parametrize(
  "fn, args, error, message",
  [case[1:] for case in TRACE_CASES],
  ids=[case[0] for case in TRACE_CASES],
)
def test_shape_dtype_and_levels_errors_name_the_argument(
  fn, args, error, message
):
  with pytest.raises(error, match=message):
    fn(*args)
  with pytest.raises(error, match=message):
    jax.jit(fn)(*args)


def test_traced_levels_is_a_type_error():
  with pytest.raises(TypeError, match=r"levels must be a Python int"):
    jax.jit(lambda x, levels: LOGISTIC(x, x, 0.0, levels=levels))(X, 4)


def test_numpy_integer_levels_is_accepted():
  np.testing.assert_allclose(
    jax.jit(lambda x: LOGISTIC(x, x, 0.0, levels=np.int64(4)))(X),
    _jitted(LOGISTIC4)[0](X, X, 0.0),
  )


# Values: raised for concrete input, staged under jit (see vae_jax.checked).
VALUE_CASES = [
  ("x_off_the_grid", LOGISTIC4, (np.full(4, 0.5, np.float32), X, 0.0), r"x must lie on the grid k / 3 for integers k \(levels = 4\)"),
  ("x_dequantised", functools.partial(LOGISTIC, levels=256), (np.array([0.3, 0.5], np.float32), np.zeros(2, np.float32), 0.0), r"x must lie on the grid k / 255"),
  ("x_above_one", LOGISTIC4, (np.array([0.0, 4 / 3], np.float32), P[:2], 0.0), r"x must lie in \[0, 1\]"),
  ("x_negative", MIXTURE4, (-X, W, W, W), r"x must lie in \[0, 1\]"),
  ("x_nan", LOGISTIC4, (np.array([np.nan], np.float32), P[:1], 0.0), r"x must lie in \[0, 1\]"),
  ("mean_nan", LOGISTIC4, (X, np.array([0, np.nan, 0, 0], np.float32), 0.0), r"mean must be finite"),
  ("mean_inf", LOGISTIC4, (X, np.array([0, 0, np.inf, 0], np.float32), 0.0), r"mean must be finite"),
  ("log_scale_inf", LOGISTIC4, (X, X, np.float32(-np.inf)), r"log_scale must be finite"),
  ("log_scale_nan_pixel", LOGISTIC4, (X, X, np.array([0, 0, 0, np.nan], np.float32)), r"log_scale must be finite"),
  ("mixture_x_off_the_grid", MIXTURE4, (X * 0.9, W, W, W), r"x must lie on the grid k / 3"),
  ("logit_weights_inf", MIXTURE4, (X, np.full((4, 2), np.inf, np.float32), W, W), r"logit_weights must be finite"),
  ("means_nan", MIXTURE4, (X, W, np.full((4, 2), np.nan, np.float32), W), r"means must be finite"),
  ("log_scales_inf", MIXTURE4, (X, W, W, np.full((4, 2), -np.inf, np.float32)), r"log_scales must be finite"),
  ("laplace_scale_zero", LAPLACE, (X, X, 0.0), r"scale must be finite and > 0"),
  ("laplace_scale_negative_pixel", LAPLACE, (X, X, np.array([1, 1, -1, 1], np.float32)), r"scale must be finite and > 0"),
  ("laplace_scale_inf", LAPLACE, (X, X, np.float32(np.inf)), r"scale must be finite and > 0"),
  ("laplace_mean_inf", LAPLACE, (X, np.array([0, -np.inf, 0, 0], np.float32), 1.0), r"mean must be finite"),
  ("laplace_x_nan", LAPLACE, (X * np.nan, X, 1.0), r"x must not contain NaN"),
]  # fmt: skip
VALUE_PARAMETERS = pytest.mark.parametrize(
  "fn, args, message",
  [case[1:] for case in VALUE_CASES],
  ids=[case[0] for case in VALUE_CASES],
)


@functools.cache
def _jitted(fn):
  """Plain and checked jit of fn, shared by the cases (fewer compilations)."""
  return jax.jit(fn), jax.jit(vae_jax.checked(fn))


@VALUE_PARAMETERS
def test_concrete_bad_values_raise_naming_the_argument(fn, args, message):
  with pytest.raises(ValueError, match=message):
    fn(*args)


@VALUE_PARAMETERS
def test_checked_catches_bad_values_under_jit(fn, args, message):
  plain, checked = _jitted(fn)
  plain(*args)  # the hot path carries no checks: plain jit must not raise
  err, _ = checked(*args)
  with pytest.raises(checkify.JaxRuntimeError, match=message):
    err.throw()


def test_valid_grids_pass_the_checks():
  # k / (levels - 1) as a data pipeline computes it, once or twice rounded.
  for dtype in DTYPES:
    for levels in (2, 4, 256, 2**16):
      grid = (np.arange(levels) / (levels - 1)).astype(dtype)
      twice = np.arange(levels, dtype=dtype) * dtype(1 / (levels - 1))
      for x in (grid, twice):
        checks.on_grid("x", x, levels)
  x = (np.arange(256) / 255).astype(np.float32)
  err, out = jax.jit(vae_jax.checked(LOGISTIC))(x, x, np.float32(-2.0))
  assert err.get() is None
  assert np.isfinite(out)
