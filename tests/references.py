"""Independent references, written from the formulas, not from vae_jax."""

import mpmath
import numpy as np

mpmath.mp.dps = 50


def _mpf(value):
  return mpmath.mpf(float(value))


def mp_log_sigmoid(l):
  l = _mpf(l)
  return -mpmath.log1p(mpmath.exp(-l))


def mp_bernoulli(x, logits):
  """sum x log s(l) + (1 - x) log s(-l), at 50 digits."""
  return float(
    sum(
      _mpf(xi) * mp_log_sigmoid(li) + (1 - _mpf(xi)) * mp_log_sigmoid(-li)
      for xi, li in zip(np.ravel(x), np.ravel(logits))
    )
  )


def mp_cb_log_normalizer(l):
  """-log of the integral over [0, 1] of lam^x (1 - lam)^(1 - x) dx, by quadrature."""
  l = _mpf(l)
  log_lam, log_1m = mp_log_sigmoid(l), mp_log_sigmoid(-l)
  integral = mpmath.quad(
    lambda t: mpmath.exp(t * log_lam + (1 - t) * log_1m), [0, 1]
  )
  return -mpmath.log(integral)


def torch_bce_sum(probs, x):
  """torch.nn.functional.binary_cross_entropy(reduction='sum'), per its docs:
  -(x log p + (1 - x) log(1 - p)) with each log clamped at -100."""
  probs = np.asarray(probs, np.float64)
  x = np.asarray(x, np.float64)
  with np.errstate(divide="ignore"):
    log_p = np.maximum(np.log(probs), -100)
    log_q = np.maximum(np.log1p(-probs), -100)
  return float(-np.sum(x * log_p + (1 - x) * log_q))
