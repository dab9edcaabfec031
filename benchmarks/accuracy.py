r"""Worst relative error of vae_jax's public functions against mpmath.

Run from the repository root::

  python -m benchmarks.accuracy

Each function is jitted once per dtype (float32, float64), vmapped over a dense
grid of inputs, and compared point by point with a 50-digit mpmath evaluation
of its defining formula at the *same* (dtype-rounded) inputs, so the figures
measure the arithmetic only, never the rounding of the inputs. Per point:

  relative error = |ours - ref| / max(|ref|, tiny(dtype)),   ref != 0
  absolute error = |ours|,                                   ref == 0

The results go to benchmarks/ACCURACY.md (overwritten), with the machine, the
library versions, the date and the command.
"""

from collections.abc import Callable, Sequence
import dataclasses
import datetime
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import jaxlib
import mpmath
import numpy as np

import vae_jax

jax.config.update("jax_enable_x64", True)

DIGITS = 50
DTYPES = (np.float32, np.float64)
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ACCURACY.md")

mpf = mpmath.mpf


# --- Grids --------------------------------------------------------------------


def _signed_log_grid(lo, hi, n):
  """-[hi .. lo], 0, [lo .. hi], log-spaced, 2 n + 1 points (float64)."""
  mags = np.geomspace(lo, hi, n)
  return np.concatenate([-mags[::-1], [0.0], mags])


LOGITS = _signed_log_grid(1e-8, 1e3, 1000)
TARGETS = (0.0, 0.3, 1.0)


def _cross(*axes):
  """All combinations of the given 1-D float64 axes, as flat arrays."""
  grids = np.meshgrid(*axes, indexing="ij")
  return [g.ravel() for g in grids]


def _is_subnormal(values, dtype):
  a = np.abs(values.astype(dtype))
  return (a > 0) & (a < np.finfo(dtype).tiny)


# --- mpmath references (each takes python floats: the exact rounded inputs) ---


def _mp_log_sigmoid(l):
  return -mpmath.log1p(mpmath.exp(-mpf(l)))


def mp_bernoulli(x, l):
  x = mpf(x)
  return x * _mp_log_sigmoid(l) + (1 - x) * _mp_log_sigmoid(-mpf(l))


def mp_cb_log_normalizer(l):
  """log(l / (2 sigmoid(l) - 1)), with its limit log 2 at l = 0."""
  l = mpf(l)
  if l == 0:
    return mpmath.log(2)
  return mpmath.log(l / (2 / (1 + mpmath.exp(-l)) - 1))


def mp_cb_log_normalizer_derivative(l):
  return mpmath.diff(mp_cb_log_normalizer, mpf(l))


def mp_continuous_bernoulli(x, l):
  return mp_bernoulli(x, l) + mp_cb_log_normalizer(l)


def mp_bernoulli_from_probs(x, p):
  """torch's x max(log p, -100) + (1 - x) max(log(1 - p), -100), exactly.

  log(1 - p) is evaluated as log1p(-p) so that it is exact for tiny p too (at
  50 digits 1 - p itself would round to 1 below p ~ 1e-50).
  """
  x, p = mpf(x), mpf(p)
  log_p = mpmath.log(p) if p > 0 else mpmath.ninf
  log_q = mpmath.log1p(-p) if p < 1 else mpmath.ninf
  return x * max(log_p, mpf(-100)) + (1 - x) * max(log_q, mpf(-100))


def mp_gaussian(x, m, sigma2):
  x, m, sigma2 = mpf(x), mpf(m), mpf(sigma2)
  return -((x - m) ** 2 / sigma2 + mpmath.log(2 * mpmath.pi * sigma2)) / 2


def mp_kl(m, v):
  m, v = mpf(m), mpf(v)
  return (mpmath.exp(v) - 1 - v + m * m) / 2


def mp_diagonal_gaussian(z, m, v):
  z, m, v = mpf(z), mpf(m), mpf(v)
  return -((z - m) ** 2 * mpmath.exp(-v) + v + mpmath.log(2 * mpmath.pi)) / 2


def mp_standard_normal(z):
  z = mpf(z)
  return -(z * z + mpmath.log(2 * mpmath.pi)) / 2


def mp_kl_monte_carlo(z, m, v):
  return mp_diagonal_gaussian(z, m, v) - mp_standard_normal(z)


def mp_iwae(log_weights):
  total = mpmath.fsum(mpmath.exp(mpf(w)) for w in log_weights)
  return mpmath.log(total) - mpmath.log(len(log_weights))


def mp_mean_square(x, m):
  return mpmath.fsum((mpf(a) - mpf(b)) ** 2 for a, b in zip(x, m)) / len(x)


def mp_bits_per_dim(nats, num_dims):
  return mpf(nats) / (num_dims * mpmath.log(2))


# --- Measurement ----------------------------------------------------------------


@dataclasses.dataclass
class Case:
  """One row per dtype of the table."""

  name: str
  # Per-point function of jax arrays (one grid point's arguments).
  fn: Callable[..., jax.Array]
  # dtype -> (tuple of float64 arrays with a leading grid axis, note); the
  # arrays are cast to the dtype before anything is evaluated.
  inputs: Callable[[type], tuple[Sequence[np.ndarray], str]]
  # Python floats (or 1-D float arrays) of one point -> mpmath value.
  reference: Callable[..., mpmath.mpf]
  # Arguments of one point -> short text for the table.
  describe: Callable[..., str]


@dataclasses.dataclass
class Row:
  name: str
  dtype: str
  points: int
  worst_rel: float
  worst_rel_at: str
  worst_rel_ours: float
  worst_rel_ref: float
  worst_abs: float
  worst_abs_at: str
  zero_refs: int
  worst_abs_at_zero: float
  # Worst relative error over the points whose reference is a normal number
  # of the dtype (|ref| >= tiny): below that, XLA:CPU flushes results to 0.
  worst_rel_normal: float
  worst_rel_normal_at: str
  note: str


def _point_args(args, i):
  out = []
  for a in args:
    v = a[i]
    out.append(float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64))
  return out


def measure(case: Case, dtype) -> Row:
  raw, note = case.inputs(dtype)
  args = [np.asarray(a, np.float64).astype(dtype) for a in raw]
  fn = jax.jit(jax.vmap(case.fn))
  ours = np.asarray(fn(*[jnp.asarray(a) for a in args]))
  assert ours.dtype == dtype, (case.name, ours.dtype)
  ours = ours.astype(np.float64)
  n = ours.shape[0]
  tiny = float(np.finfo(dtype).tiny)
  worst = (-1.0, 0)
  worst_normal = (-1.0, 0)
  worst_abs = (-1.0, 0)
  zero_refs, worst_zero = 0, 0.0
  refs = np.empty(n)
  with mpmath.workdps(DIGITS):
    for i in range(n):
      point = _point_args(args, i)
      ref = case.reference(*point)
      ref_f = float(ref)
      refs[i] = ref_f
      abs_err = float(abs(mpf(ours[i]) - ref))
      if abs_err > worst_abs[0] or not np.isfinite(ours[i]):
        worst_abs = (abs_err if np.isfinite(ours[i]) else np.inf, i)
      if ref == 0:
        zero_refs += 1
        worst_zero = max(worst_zero, abs_err)
        continue
      rel = abs_err / max(abs(ref_f), tiny)
      if not np.isfinite(ours[i]):
        rel = np.inf
      if rel > worst[0]:
        worst = (rel, i)
      if abs(ref_f) >= tiny and rel > worst_normal[0]:
        worst_normal = (rel, i)
  rel, i = worst
  return Row(
    name=case.name,
    dtype=np.dtype(dtype).name,
    points=n,
    worst_rel=rel,
    worst_rel_at=case.describe(*_point_args(args, i)),
    worst_rel_ours=float(ours[i]),
    worst_rel_ref=float(refs[i]),
    worst_abs=worst_abs[0],
    worst_abs_at=case.describe(*_point_args(args, worst_abs[1])),
    zero_refs=zero_refs,
    worst_abs_at_zero=worst_zero,
    worst_rel_normal=worst_normal[0],
    worst_rel_normal_at=case.describe(*_point_args(args, worst_normal[1])),
    note=note,
  )


def _g(v):
  return f"{v:.6g}"


def _describe_xl(x, l):
  return f"x={_g(x)}, l={_g(l)}"


# --- Cases ----------------------------------------------------------------------


def _xl_inputs(dtype):
  del dtype
  x, l = _cross(np.array(TARGETS), LOGITS)
  return (x[:, None], l[:, None]), ""


def _logit_inputs(dtype):
  del dtype
  return (LOGITS,), ""


def _probs_inputs(dtype):
  near_zero = np.concatenate(
    [[0.0], np.geomspace(1e-320, 0.5, 2000), [1e-45, 1e-40, 1e-39]]
  )
  near_one = 1 - np.geomspace(1e-17, 0.5, 1000)
  probs = np.unique(np.concatenate([near_zero, near_one, [1.0]]))
  # Cast first: near-one values collapse onto the dtype's grid near 1.
  probs = np.unique(probs.astype(dtype)).astype(np.float64)
  subnormal = _is_subnormal(probs, dtype)
  # The input grid itself must hold no subnormals: XLA:CPU flushes them to
  # zero (documented), so their error would be the flush, not the formula.
  probs = probs[~subnormal]
  x, p = _cross(np.array(TARGETS), probs)
  note = (
    f"skipped {int(subnormal.sum())} p subnormal in {np.dtype(dtype).name}"
    " (flushed to 0 on XLA:CPU, documented)"
  )
  return (x[:, None], p[:, None]), note


def _gaussian_inputs(dtype):
  del dtype
  sigma2 = np.geomspace(1e-6, 1e3, 1000)
  residual = np.array([0.0, 1e-4, 1e-2, 0.3, 1.0, 3.0])
  r, s = _cross(residual, sigma2)
  x = np.full_like(r, 0.5)
  return (x[:, None], (x - r)[:, None], s), ""


def _kl_inputs(dtype):
  del dtype
  v = _signed_log_grid(1e-8, 20.0, 1000)
  means = np.array([0.0, 1e-4, 0.1, 1.0, 3.0])
  m, v = _cross(means, v)
  return (m[:, None], v[:, None]), ""


def _latent_inputs(dtype):
  del dtype
  v = np.concatenate([np.linspace(-20, 20, 401), [-1e-3, 1e-3]])
  offsets = np.array([0.0, 1e-4, 0.3, 1.0, 5.0])  # z - m, in units of sigma
  means = np.array([-2.0, 0.0, 0.7])
  m, v, o = _cross(means, v, offsets)
  z = m + o * np.exp(v / 2)
  return (z[:, None], m[:, None], v[:, None]), ""


def _z_inputs(dtype):
  del dtype
  return (_signed_log_grid(1e-6, 1e3, 1000)[:, None],), ""


def _iwae_inputs(dtype):
  del dtype
  rng = np.random.default_rng(0)
  k = 5000
  rows = []
  for _ in range(4):
    rows.append(rng.uniform(-1e4, 0.0, k))  # uniformly spread
    rows.append(-(10.0 ** rng.uniform(-8, 4, k)))  # log-spread magnitudes
    rows.append(rng.normal(-100.0, 5.0, k))  # typical IWAE
  rows.append(np.zeros(k))  # all equal: ref 0
  rows.append(np.full(k, -1e4))  # all equal: -1e4
  one = np.full(k, -1e4)
  one[17] = 0.0
  rows.append(one)  # one dominant
  near = -(10.0 ** rng.uniform(-8, -2, k))  # all ~0: ref ~ -mean
  rows.append(near)
  return (np.stack(rows),), ""


def _describe_iwae(w):
  return (
    f"K={w.size}, log w in [{_g(w.min())}, {_g(w.max())}], mean {_g(w.mean())}"
  )


def _mse_inputs(dtype):
  del dtype
  rng = np.random.default_rng(1)
  d = 784
  xs, ms = [], []
  for scale in (1e-6, 1e-3, 1e-1, 1.0, 10.0):
    for _ in range(4):
      x = rng.random(d)
      xs.append(x)
      ms.append(x + scale * rng.normal(size=d))
  return (np.stack(xs), np.stack(ms)), ""


def _describe_mse(x, m):
  return f"D={x.size}, rms(x - m)={_g(np.sqrt(np.mean((x - m) ** 2)))}"


def _nats_inputs(dtype):
  del dtype
  return (_signed_log_grid(1e-6, 1e6, 1000),), ""


CASES = [
  Case(
    "bernoulli_log_likelihood",
    vae_jax.bernoulli_log_likelihood,
    _xl_inputs,
    lambda x, l: mp_bernoulli(x[0], l[0]),
    lambda x, l: _describe_xl(x[0], l[0]),
  ),
  Case(
    "continuous_bernoulli_log_likelihood",
    vae_jax.continuous_bernoulli_log_likelihood,
    _xl_inputs,
    lambda x, l: mp_continuous_bernoulli(x[0], l[0]),
    lambda x, l: _describe_xl(x[0], l[0]),
  ),
  Case(
    "continuous_bernoulli_log_normalizer",
    vae_jax.continuous_bernoulli_log_normalizer,
    _logit_inputs,
    mp_cb_log_normalizer,
    lambda l: f"l={_g(l)}",
  ),
  Case(
    "d/dl continuous_bernoulli_log_normalizer",
    jax.grad(vae_jax.continuous_bernoulli_log_normalizer),
    _logit_inputs,
    mp_cb_log_normalizer_derivative,
    lambda l: f"l={_g(l)}",
  ),
  Case(
    "bernoulli_log_likelihood_from_probs",
    vae_jax.bernoulli_log_likelihood_from_probs,
    _probs_inputs,
    lambda x, p: mp_bernoulli_from_probs(x[0], p[0]),
    lambda x, p: f"x={_g(x[0])}, p={_g(p[0])}",
  ),
  Case(
    "gaussian_log_likelihood",
    vae_jax.gaussian_log_likelihood,
    _gaussian_inputs,
    lambda x, m, s: mp_gaussian(x[0], m[0], s),
    lambda x, m, s: f"x-m={_g(x[0] - m[0])}, sigma2={_g(s)}",
  ),
  Case(
    "kl_standard_normal",
    vae_jax.kl_standard_normal,
    _kl_inputs,
    lambda m, v: mp_kl(m[0], v[0]),
    lambda m, v: f"m={_g(m[0])}, v={_g(v[0])}",
  ),
  Case(
    "kl_standard_normal_per_dim",
    lambda m, v: vae_jax.kl_standard_normal_per_dim(m, v)[0],
    _kl_inputs,
    lambda m, v: mp_kl(m[0], v[0]),
    lambda m, v: f"m={_g(m[0])}, v={_g(v[0])}",
  ),
  Case(
    "diagonal_gaussian_log_density",
    vae_jax.diagonal_gaussian_log_density,
    _latent_inputs,
    lambda z, m, v: mp_diagonal_gaussian(z[0], m[0], v[0]),
    lambda z, m, v: f"z={_g(z[0])}, m={_g(m[0])}, v={_g(v[0])}",
  ),
  Case(
    "standard_normal_log_density",
    vae_jax.standard_normal_log_density,
    _z_inputs,
    lambda z: mp_standard_normal(z[0]),
    lambda z: f"z={_g(z[0])}",
  ),
  Case(
    "kl_monte_carlo",
    vae_jax.kl_monte_carlo,
    _latent_inputs,
    lambda z, m, v: mp_kl_monte_carlo(z[0], m[0], v[0]),
    lambda z, m, v: f"z={_g(z[0])}, m={_g(m[0])}, v={_g(v[0])}",
  ),
  Case(
    "importance_weighted_bound",
    vae_jax.importance_weighted_bound,
    _iwae_inputs,
    mp_iwae,
    _describe_iwae,
  ),
  Case(
    "optimal_sigma2",
    vae_jax.optimal_sigma2,
    _mse_inputs,
    mp_mean_square,
    _describe_mse,
  ),
  Case(
    "nats_to_bits_per_dim",
    lambda n: vae_jax.nats_to_bits_per_dim(n, 784),
    _nats_inputs,
    lambda n: mp_bits_per_dim(n, 784),
    lambda n: f"nats={_g(n)}",
  ),
]

NOT_MEASURED = """\
Not measured separately, because they only compose the functions above:
`negative_elbo`, `rate_and_distortion` (likelihood + beta * KL),
`log_importance_weight` (log-likelihood - `kl_monte_carlo`),
`optimal_sigma2_batch` (`optimal_sigma2` over the batch), and the plumbing
`batched`, `checked`, `get_likelihood`, `LIKELIHOODS`."""

READING = """\
How to read the table. The relative error is the natural measure when the
result is computed without cancellation; where the result is a small
difference of larger terms, a relative error much above eps means the
*formula* (not the reference) cancels, and the worst absolute error column
then shows the size of the loss on the scale of those terms. Columns:
*worst rel. error* (in units of the dtype's eps in brackets) and the input
where it occurred with our value and the reference there; *worst abs. error*
over all points and where; *ref = 0* counts points whose reference is exactly
zero, where the absolute error is reported instead (in brackets, the worst)."""


def _fmt_err(v, dtype):
  if not np.isfinite(v):
    return "inf"
  eps = float(np.finfo(dtype).eps)
  return f"{v:.2e} ({v / eps:.3g} eps)"


def _machine():
  model = "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  return model, os.cpu_count(), usable


def write_report(rows, seconds, path=OUTPUT):
  model, cores, usable = _machine()
  command = " ".join(getattr(sys, "orig_argv", [sys.executable] + sys.argv))
  now = datetime.datetime.now(datetime.timezone.utc)
  lines = [
    "# vae_jax accuracy against mpmath",
    "",
    f"Generated by `benchmarks/accuracy.py` on {now:%Y-%m-%d %H:%M} UTC in"
    f" {seconds:.0f} s. Do not edit by hand: rerun it.",
    "",
    f"- Command: `{command}` (working directory `{os.getcwd()}`)",
    f"- Machine: {model}, {cores} logical cores ({usable} usable),"
    f" {platform.system()} {platform.machine()}, JAX backend"
    f" {jax.default_backend()}",
    f"- Versions: Python {platform.python_version()}, jax {jax.__version__},"
    f" jaxlib {jaxlib.__version__}, numpy {np.__version__},"
    f" mpmath {mpmath.__version__} (reference at {DIGITS} digits)",
    "",
    "Every function is jitted once per dtype and vmapped over its grid; the",
    "reference is evaluated at the same dtype-rounded inputs.",
    "relative error = |ours - ref| / max(|ref|, tiny(dtype)); where ref is",
    "exactly 0 the absolute error is counted instead (column *ref = 0*).",
    "",
    "## Grids",
    "",
    "- Logits l: 0 and +-[1e-8 .. 1e3], 1000 log-spaced magnitudes per sign;"
    " Bernoulli and continuous Bernoulli on one-pixel examples with"
    f" x in {{{', '.join(map(str, TARGETS))}}}. Normaliser and its"
    " derivative (jax.grad vs mpmath.diff) on the same logits.",
    "- bernoulli_log_likelihood_from_probs: p = 0, 1, 2000 log-spaced in"
    " [1e-320, 0.5], 1 - [1e-17 .. 0.5] (1000), after rounding to the dtype;"
    " reference torch's formula x max(log p, -100) + (1 - x) max(log(1 - p),"
    " -100) with log(1 - p) exact (log1p); subnormal p skipped (see note).",
    "- gaussian_log_likelihood: one pixel, x - m in {0, 1e-4, 1e-2, 0.3, 1,"
    " 3}, scalar sigma2 1000 log-spaced in [1e-6, 1e3].",
    "- kl_standard_normal(_per_dim): one latent dim, m in {0, 1e-4, 0.1, 1,"
    " 3}, v = 0 and +-[1e-8 .. 20] (1000 per sign).",
    "- diagonal_gaussian_log_density, kl_monte_carlo: m in {-2, 0, 0.7},"
    " v in -20..20 (401) and +-1e-3, z = m + o exp(v/2) with o in"
    " {0, 1e-4, 0.3, 1, 5}. standard_normal_log_density: z = 0 and"
    " +-[1e-6 .. 1e3].",
    "- importance_weighted_bound: 16 vectors of K = 5000 log-weights:"
    " uniform in [-1e4, 0], -10^U(-8, 4), N(-100, 5^2) (4 each), all 0, all"
    " -1e4, one 0 among -1e4, and -10^U(-8, -2).",
    "- optimal_sigma2: 20 examples of D = 784, x ~ U(0, 1), m = x + s N(0, 1)"
    " with s in {1e-6, 1e-3, 0.1, 1, 10}. nats_to_bits_per_dim: D = 784,"
    " nats = 0 and +-[1e-6 .. 1e6].",
    "",
    "## Results",
    "",
    "| function | dtype | points | worst rel. error | at | ours | ref |"
    " worst abs. error | at | ref = 0 |",
    "|---|---|---:|---|---|---:|---:|---|---|---|",
  ]
  notes = []
  for r in rows:
    zero = f"{r.zero_refs} ({r.worst_abs_at_zero:.2e})" if r.zero_refs else "0"
    lines.append(
      f"| `{r.name}` | {r.dtype} | {r.points} |"
      f" {_fmt_err(r.worst_rel, np.dtype(r.dtype))} | {r.worst_rel_at} |"
      f" {r.worst_rel_ours:.9g} | {r.worst_rel_ref:.9g} |"
      f" {r.worst_abs:.2e} | {r.worst_abs_at} | {zero} |"
    )
    if r.note:
      notes.append(f"- `{r.name}`, {r.dtype}: {r.note}.")
    if r.worst_rel_normal < r.worst_rel:
      notes.append(
        f"- `{r.name}`, {r.dtype}: the worst point has a subnormal"
        " reference, which XLA:CPU flushes to zero; over references"
        f" >= tiny the worst is {_fmt_err(r.worst_rel_normal, np.dtype(r.dtype))}"
        f" at {r.worst_rel_normal_at}."
      )
  lines += ["", *notes, "", READING, "", NOT_MEASURED, ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def main():
  start = time.perf_counter()
  rows = []
  for case in CASES:
    for dtype in DTYPES:
      t = time.perf_counter()
      row = measure(case, dtype)
      rows.append(row)
      print(
        f"{case.name:42s} {row.dtype:8s} worst rel"
        f" {row.worst_rel:.2e} at {row.worst_rel_at}"
        f"  ({time.perf_counter() - t:.1f} s)",
        flush=True,
      )
  seconds = time.perf_counter() - start
  write_report(rows, seconds)
  print(f"wrote {OUTPUT} in {seconds:.0f} s")


if __name__ == "__main__":
  main()
