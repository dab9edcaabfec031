"""Honest evaluation of a trained VAE: ELBO, IWAE estimate of log p(x), active units.

Model-agnostic: the caller supplies two functions,

- ``encode(x_batch) -> (mean, log_variance)``, each ``[B, L]``: the diagonal
  Gaussian posterior q(z | x) of a batch ``[B, *data_shape]``;
- ``log_likelihood(x, z) -> scalar``: log p(x | z) in nats for ONE example
  ``[*data_shape]`` and one latent ``[L]`` (e.g.
  ``lambda x, z: vae_jax.bernoulli_log_likelihood(x, decoder(z))``).

The prior is p(z) = N(0, I). Estimated, per example and in nats:

- ELBO = log p(x | z) - KL(q(z | x) || p(z)) with one reparameterised z ~ q
  and the KL in closed form; reported as distortion -log p(x | z) and rate KL.
- IWAE_K = log (1/K) sum_k w_k, w_k = p(x | z_k) p(z_k) / q(z_k | x),
  z_k ~ q (Burda et al., 2016). In expectation
  log p(x) >= IWAE_K >= IWAE_1 = ELBO, and IWAE_K -> log p(x) as K grows; its
  negative with K = 5000 is the usual test NLL. Bits per dimension divide the
  NLL by D ln 2 (after adding D log(levels) for dequantised data).

Memory: the K samples are drawn and decoded ``chunk_size`` at a time inside
``lax.scan``, and their weights folded into a running log-sum-exp (a max and a
sum of exp(log w - max) per example), so an evaluation batch needs
O(B * chunk_size * D) memory, not O(B * K * D). The last chunk is padded past K
and its extra weights masked to -inf, which is exact.

Noise: sample k of example row r uses
``normal(fold_in(fold_in(key, r), k), [L])``, so it depends on neither the
chunk size nor, in :func:`evaluate` (where r is the index in the whole set),
the batch size: results agree across both to float rounding. The ELBO's z is
sample 0 of the same stream, so with one key the ELBO and IWAE estimates share
common random numbers (IWAE_1 - ELBO is then exactly the closed-form KL minus
its one-sample Monte Carlo estimate).
"""

from collections.abc import Callable
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checks
from vae_jax import divergences
from vae_jax import objectives
from vae_jax import units
from vae_jax.train import progress as progress_lib

Array = jax.Array
Encoder = Callable[[Array], tuple[Array, Array]]
LogLikelihood = Callable[[Array, Array], Array]


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return value


def _encode(encode: Encoder, x: Array) -> tuple[Array, Array]:
  checks.at_least_rank("x", x, 1)
  mean, log_variance = encode(x)
  if mean.ndim != 2 or mean.shape[0] != x.shape[0]:
    raise ValueError(
      f"encode must return a mean of shape [B, L] with B ="
      f" {x.shape[0]}, got {mean.shape}."
    )
  checks.same_shape(("mean", mean), ("log_variance", log_variance))
  return mean, log_variance


def _row_keys(key: Array, rows: Array) -> Array:
  return jax.vmap(jax.random.fold_in, (None, 0))(key, rows)


def _all_rows(x: Array) -> Array:
  return jnp.arange(x.shape[0], dtype=jnp.uint32)


def _noise(
  row_keys: Array, sample_indices: Array, latent_dim: int, dtype
) -> Array:
  """Standard normal noise [B, C, L], one key per (row, sample index).

  Keyed by the sample's index, not its chunk, so chunking cannot change it.
  """

  def one(key, k):
    return jax.random.normal(jax.random.fold_in(key, k), (latent_dim,), dtype)

  per_row = jax.vmap(one, (None, 0))
  return jax.vmap(per_row, (0, None))(row_keys, sample_indices)


def _reparameterise(mean: Array, log_variance: Array, eps: Array) -> Array:
  """z [B, C, L] for eps [B, C, L] and a posterior [B, L]
  (:func:`vae_jax.divergences.reparameterize`)."""
  return divergences.reparameterize(mean[:, None], log_variance[:, None], eps)


def _elbo_terms(
  log_likelihood: LogLikelihood,
  x: Array,
  mean: Array,
  log_variance: Array,
  row_keys: Array,
) -> dict[str, Array]:
  eps = _noise(row_keys, jnp.zeros(1, jnp.uint32), mean.shape[1], mean.dtype)
  z = _reparameterise(mean, log_variance, eps)[:, 0]
  distortion = -jax.vmap(log_likelihood)(x, z)
  kl_per_dim = divergences.kl_standard_normal_per_dim(mean, log_variance)
  rate = jnp.sum(kl_per_dim, axis=-1)
  return {
    "elbo": -(distortion + rate),
    "rate": rate,
    "distortion": distortion,
    "kl_per_dim": kl_per_dim,
    "mean": mean,
  }


def elbo_terms(
  encode: Encoder, log_likelihood: LogLikelihood, x: Array, key: Array
) -> dict[str, Array]:
  """Per-example ELBO, rate and distortion with one reparameterised sample.

  ELBO = -(distortion + rate), distortion = -log p(x | z) at
  z = mean + exp(log_variance / 2) * eps, rate = KL(q(z | x) || N(0, I)) in
  closed form (:func:`vae_jax.kl_standard_normal_per_dim`, summed).

  Args:
    encode: ``x [B, ...] -> (mean, log_variance)``, each ``[B, L]``.
    log_likelihood: ``(x [...], z [L]) -> scalar`` log p(x | z) in nats.
    x: a batch, shape ``[B, ...]``.
    key: PRNG key; row r draws eps = normal(fold_in(fold_in(key, r), 0), [L])
      in the posterior's dtype.

  Returns:
    ``{"elbo", "rate", "distortion"}``: ``[B]`` in nats per example;
    ``"kl_per_dim"``: ``[B, L]`` nats; ``"mean"``: the posterior means ``[B, L]``.
  """
  mean, log_variance = _encode(encode, x)
  return _elbo_terms(
    log_likelihood, x, mean, log_variance, _row_keys(key, _all_rows(x))
  )


def _log_weights(
  log_likelihood: LogLikelihood,
  x: Array,
  z: Array,
  mean: Array,
  log_variance: Array,
) -> Array:
  """log w for z [B, C, L] -> [B, C]."""

  def per_row(x_r, z_r, mean_r, log_variance_r):
    def per_sample(z_rc):
      return objectives.log_importance_weight(
        log_likelihood(x_r, z_rc), z_rc, mean_r, log_variance_r
      )

    return jax.vmap(per_sample)(z_r)

  return jax.vmap(per_row)(x, z, mean, log_variance)


def _iwae(
  log_likelihood: LogLikelihood,
  x: Array,
  mean: Array,
  log_variance: Array,
  row_keys: Array,
  num_samples: int,
  chunk_size: int,
) -> Array:
  # Weights accumulate in at least float32, whatever the encoder's dtype.
  dtype = jnp.promote_types(mean.dtype, jnp.float32)
  num_chunks = -(-num_samples // chunk_size)
  offsets = jnp.arange(chunk_size, dtype=jnp.uint32)

  def step(carry, chunk):
    running_max, running_sum = carry  # logsumexp so far = max + log(sum)
    sample_indices = chunk.astype(jnp.uint32) * chunk_size + offsets
    eps = _noise(row_keys, sample_indices, mean.shape[1], mean.dtype)
    z = _reparameterise(mean, log_variance, eps)
    log_w = _log_weights(log_likelihood, x, z, mean, log_variance).astype(dtype)
    log_w = jnp.where(sample_indices < num_samples, log_w, -jnp.inf)
    new_max = jnp.maximum(running_max, jnp.max(log_w, axis=1))
    # Until a row sees a finite weight its shift stays 0: no -inf - -inf = NaN.
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0)
    running_sum = running_sum * jnp.exp(running_max - shift) + jnp.sum(
      jnp.exp(log_w - shift[:, None]), axis=1
    )
    return (new_max, running_sum), None

  rows = mean.shape[:1]
  init = (jnp.full(rows, -jnp.inf, dtype), jnp.zeros(rows, dtype))
  (log_max, total), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
  return log_max + jnp.log(total) - math.log(num_samples)


def iwae_log_likelihood(
  encode: Encoder,
  log_likelihood: LogLikelihood,
  x: Array,
  key: Array,
  *,
  num_samples: int,
  chunk_size: int,
) -> Array:
  """Importance-weighted estimate of log p(x) per example (Burda et al., 2016).

  IWAE_K = logsumexp_k(log w_k) - log K, log w = log p(x | z) + log p(z)
  - log q(z | x) (:func:`vae_jax.log_importance_weight`), z_k ~ q(z | x). A
  lower bound on log p(x) in expectation that tightens with K. Samples are
  processed ``chunk_size`` at a time with a streaming log-sum-exp, so memory
  is O(B * chunk_size * D). Jittable with ``num_samples`` and ``chunk_size``
  static (e.g. bound with ``functools.partial``).

  Args:
    encode: ``x [B, ...] -> (mean, log_variance)``, each ``[B, L]``.
    log_likelihood: ``(x [...], z [L]) -> scalar`` log p(x | z) in nats.
    x: a batch, shape ``[B, ...]``.
    key: PRNG key; sample k of row r draws
      eps = normal(fold_in(fold_in(key, r), k), [L]), so the result does not
      depend on ``chunk_size``.
    num_samples: K >= 1.
    chunk_size: samples per chunk, >= 1; need not divide K (values above K are
      treated as K).

  Returns:
    ``[B]`` estimates of log p(x) in nats (at least float32).
  """
  num_samples = _positive_int("num_samples", num_samples)
  chunk_size = min(_positive_int("chunk_size", chunk_size), num_samples)
  mean, log_variance = _encode(encode, x)
  return _iwae(
    log_likelihood,
    x,
    mean,
    log_variance,
    _row_keys(key, _all_rows(x)),
    num_samples,
    chunk_size,
  )


def active_units(
  means: np.ndarray | Array, threshold: float = 0.01
) -> tuple[int, np.ndarray]:
  """Counts active latent dimensions (Burda et al., 2016).

  Dimension u is active if A_u = Var_x(E_q[z_u | x]) > threshold, the
  variance over the evaluation set of the posterior means (population
  variance, ddof = 0). A host-side reduction, in float64.

  Args:
    means: posterior means of the whole evaluation set, shape ``[N, L]``.
    threshold: activity threshold; 0.01 as in the paper.

  Returns:
    ``(count, variance)``: the number of active dimensions (a Python int) and
    A_u, shape ``[L]``.
  """
  values = np.asarray(means, np.float64)
  if values.ndim != 2 or values.shape[0] < 1:
    raise ValueError(
      f"means must have shape [N, L] with N >= 1, got {values.shape}."
    )
  variance = np.var(values, axis=0)
  return int(np.sum(variance > threshold)), variance


def evaluate_batch(
  encode: Encoder,
  log_likelihood: LogLikelihood,
  x: Array,
  key: Array,
  first_row: Array,
  *,
  num_samples: int,
  chunk_size: int,
) -> dict[str, Array]:
  """Per-example terms of one batch: the traced core of :func:`evaluate`.

  Pure and jittable (``num_samples`` and ``chunk_size`` static); vmap it over
  models to evaluate many at once (as a sweep does).

  Args:
    encode, log_likelihood: as in :func:`evaluate`.
    x: a batch ``[B, ...]``.
    key: PRNG key of the whole evaluation.
    first_row: uint32 index of ``x[0]`` in the evaluation set (the noise of
      row r depends on its global index, not on the batching).
    num_samples, chunk_size: as in :func:`evaluate`.

  Returns:
    ``"elbo"``, ``"rate"``, ``"distortion"``, ``"log_px"`` (IWAE_K), each
    ``[B]`` in nats, and ``"mean"`` and ``"kl_per_dim"``, each ``[B, L]``:
    the inputs of :func:`summarize`.
  """
  mean, log_variance = _encode(encode, x)
  # Global row indices, so the noise does not depend on batch_size.
  row_keys = _row_keys(key, first_row + _all_rows(x))
  terms = _elbo_terms(log_likelihood, x, mean, log_variance, row_keys)
  terms["log_px"] = _iwae(
    log_likelihood, x, mean, log_variance, row_keys, num_samples, chunk_size
  )
  return terms


def evaluate(
  encode: Encoder,
  log_likelihood: LogLikelihood,
  images,
  key: Array,
  *,
  num_samples: int,
  chunk_size: int,
  batch_size: int,
  num_dims: int,
  bits_offset_nats_per_dim: float = 0.0,
  progress: bool = False,
) -> dict:
  """ELBO, IWAE NLL, bits/dim and active units over a whole evaluation set.

  Batches of ``batch_size`` go through one function compiled once per call;
  the last partial batch is padded with copies of the last example, whose
  results are dropped. Whatever the batch size, the per-example values equal
  those of :func:`elbo_terms` and :func:`iwae_log_likelihood` on the whole set
  with the same ``key`` (so the ELBO's sample is the IWAE's first).

  Args:
    encode: ``x [B, ...] -> (mean, log_variance)``, each ``[B, L]``; must treat
      rows independently (no batch statistics).
    log_likelihood: ``(x [...], z [L]) -> scalar`` log p(x | z) in nats.
    images: the evaluation set, ``[N, ...]``, NumPy or JAX.
    key: PRNG key.
    num_samples: K of the IWAE estimate (5000 is usual).
    chunk_size: IWAE samples decoded at once per batch; memory is
      O(batch_size * chunk_size * D).
    batch_size: examples per compiled call.
    num_dims: D, data dimensions per example, for bits/dim.
    bits_offset_nats_per_dim: added per dimension to the NLL before the
      conversion: log(levels) (log 256 for 8-bit data) for a continuous
      density on dequantised data, 0 for discrete likelihoods.
    progress: show the progress over batches (:func:`over_batches`).

  Returns:
    A JSON-serialisable dict: ``"elbo"``, ``"rate"``, ``"distortion"``,
    ``"nll"`` (mean of -IWAE_K), means over examples in nats per example;
    ``"nll_samples"``: K; ``"bits_per_dim"``: (nll + offset D) / (D ln 2);
    ``"active_units"`` and ``"posterior_mean_variance"`` (``[L]``) from
    :func:`active_units`; ``"kl_per_dim"``: ``[L]`` mean KL per latent
    dimension in nats; ``"num_examples"``: N.
  """
  num_samples = _positive_int("num_samples", num_samples)
  chunk_size = min(_positive_int("chunk_size", chunk_size), num_samples)
  units.nats_to_bits_per_dim(0.0, num_dims)  # validates num_dims up front
  num_examples = len(images)
  if num_examples < 1:
    raise ValueError("images must hold at least one example.")
  batch_size = min(_positive_int("batch_size", batch_size), num_examples)

  batch_fn = jax.jit(
    functools.partial(
      evaluate_batch,
      encode,
      log_likelihood,
      num_samples=num_samples,
      chunk_size=chunk_size,
    )
  )
  padded = padded_rows(images, batch_size)
  per_example = over_batches(
    lambda start: batch_fn(
      padded[start : start + batch_size], key, np.uint32(start)
    ),
    num_examples,
    batch_size,
    progress=progress,
  )
  return summarize(per_example, num_samples, num_dims, bits_offset_nats_per_dim)


def over_batches(
  batch_fn: Callable[[int], dict],
  num_examples: int,
  batch_size: int,
  *,
  axis: int = 0,
  progress: bool = False,
) -> dict[str, np.ndarray]:
  """Every batch of an evaluation set through ``batch_fn``, joined.

  Args:
    batch_fn: ``start -> {name: [..., batch_size, ...]}``, the per-example
      terms of rows ``start .. start + batch_size`` (e.g.
      :func:`evaluate_batch` of a padded set, see :func:`padded_rows`).
    num_examples: N, the rows of the set.
    batch_size: rows per call.
    axis: the example axis of ``batch_fn``'s outputs (1 for outputs with a
      leading member axis ``[K, B, ...]``).
    progress: a bar on a terminal, one line with the time taken elsewhere.

  Returns:
    ``{name: [..., N, ...]}`` host arrays, the padding rows dropped.
  """
  outputs = [
    # Fetched per batch, so that the progress tracks finished work.
    jax.device_get(batch_fn(start))
    for start in progress_lib.batches(
      range(0, num_examples, batch_size), "evaluate", progress
    )
  ]
  return {
    name: np.take(
      np.concatenate([o[name] for o in outputs], axis=axis),
      np.arange(num_examples),
      axis=axis,
    )
    for name in outputs[0]
  }


def padded_rows(values, batch_size: int):
  """``values`` ``[N, ...]`` with copies of its last row appended up to a
  multiple of ``batch_size``: how :func:`evaluate` fills its last batch."""
  n = len(values)
  return values[np.minimum(np.arange(-(-n // batch_size) * batch_size), n - 1)]


def summarize(
  per_example: dict[str, np.ndarray],
  num_samples: int,
  num_dims: int,
  bits_offset_nats_per_dim: float,
) -> dict:
  """Means over examples, in float64 on the host, as plain Python values:
  the dict :func:`evaluate` returns, from the concatenated outputs of
  :func:`evaluate_batch` (each ``[N, ...]``)."""
  per_example = {k: v.astype(np.float64) for k, v in per_example.items()}
  nll = -float(np.mean(per_example["log_px"]))
  count, variance = active_units(per_example["mean"])
  bits = units.nats_to_bits_per_dim(
    nll + bits_offset_nats_per_dim * num_dims, num_dims
  )
  return {
    "elbo": float(np.mean(per_example["elbo"])),
    "rate": float(np.mean(per_example["rate"])),
    "distortion": float(np.mean(per_example["distortion"])),
    "nll": nll,
    "nll_samples": num_samples,
    "bits_per_dim": float(bits),
    "active_units": count,
    "kl_per_dim": np.mean(per_example["kl_per_dim"], axis=0).tolist(),
    "posterior_mean_variance": variance.tolist(),
    "num_examples": len(per_example["log_px"]),
  }
