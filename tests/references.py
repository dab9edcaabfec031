"""Independent references, written from the formulas, not from vae_jax."""

import mpmath
import numpy as np
from scipy import stats

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


class LinearGaussian:
  """p(z) = N(0, I), p(x | z) = N(W z + b, sigma2 I), W^T W diagonal, so the
  exact posterior N(v W^T (x - b) / sigma2, v), v = 1 / (1 + diag(W^T W) /
  sigma2), is diagonal and log p(x) = log N(x; b, W W^T + sigma2 I)."""

  def __init__(self, seed=0, data_dim=12, latent_dim=3, sigma2=0.3):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(data_dim, latent_dim)))
    self.w = basis * rng.uniform(0.5, 3.0, latent_dim)
    self.b = rng.normal(size=data_dim)
    self.sigma2 = sigma2
    self.x = 2 * rng.normal(size=data_dim)
    self.post_var = 1 / (1 + np.sum(self.w**2, axis=0) / sigma2)
    self.post_mean = self.post_var * (self.w.T @ (self.x - self.b)) / sigma2
    self.log_px = stats.multivariate_normal.logpdf(
      self.x, self.b, self.w @ self.w.T + sigma2 * np.eye(data_dim)
    )

  def decode(self, z):
    return self.w @ z + self.b
