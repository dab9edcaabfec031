"""The figures of one trained member: reconstructions, samples, curves and a
latent traversal (a 2-D manifold when the latent space is 2-D)."""

import functools
import os

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def member_figures(
  directory: str,
  config: ml_collections.ConfigDict,
  graphdef,
  params,
  test_images: np.ndarray,
  kl_per_dim: list[float] | None,
  records: list[dict],
  key: jax.Array,
) -> None:
  """Writes ``reconstructions.png``, ``samples.png``, ``curves.png`` and
  ``latent_traversal.png`` under ``directory``.

  Args:
    directory: where the PNGs go (created if missing).
    config: the member's config (for labels and the latent size).
    graphdef, params: the trained model.
    test_images: ``[N, H, W, C]`` in [0, 1]; the first 32 are shown.
    kl_per_dim: ``[L]`` test KL per latent dimension (orders the traversal),
      or None (a diverged member: dimensions in index order).
    records: the member's metrics records (the curves).
    key: draws the prior samples.
  """
  # matplotlib is slow to import: paid here, after training, not at start.
  from vae_jax.train import plots

  m = nnx.merge(graphdef, params)
  decode = functools.partial(_mean_image(graphdef), params)
  x = test_images[:32]
  mean, _ = m.encode(x)
  label = (
    f"{config.source}, {config.likelihood}, L={config.latent_dim}, "
    f"beta={config.beta}"
  )
  plots.reconstructions(
    os.path.join(directory, "reconstructions.png"),
    np.asarray(x),
    np.asarray(decode(mean)),
    f"{label}: posterior-mean reconstructions",
  )
  z = jax.random.normal(key, (64, config.latent_dim), jnp.float32)
  plots.samples(
    os.path.join(directory, "samples.png"),
    np.asarray(decode(z)),
    f"{label}: E[x|z], z ~ N(0, I)",
  )
  plots.curves(os.path.join(directory, "curves.png"), records)
  if config.latent_dim == 2:
    n = 15
    q = jax.scipy.special.ndtri(jnp.linspace(0.5 / n, 1 - 0.5 / n, n))
    # Row i, column j decodes (z_1, z_2) = (q_j, q_{n-1-i}): z_2 grows upward.
    z = jnp.stack(jnp.broadcast_arrays(q[None, :], q[::-1, None]), -1)
    plots.latent_grid(
      os.path.join(directory, "latent_traversal.png"),
      np.asarray(decode(z.reshape(-1, 2).astype(jnp.float32))),
      n,
      n,
      "2-D latent manifold at Gaussian quantiles",
      "z_2",
      "z_1",
    )
    return
  order = (
    np.arange(config.latent_dim)
    if kl_per_dim is None
    else np.argsort(kl_per_dim)[::-1]
  )
  dims = order[:8]
  steps = jnp.linspace(-3, 3, 11, dtype=jnp.float32)
  z = jnp.zeros((len(dims), len(steps), config.latent_dim), jnp.float32)
  z = z.at[jnp.arange(len(dims))[:, None], :, dims[:, None]].set(steps)
  plots.latent_grid(
    os.path.join(directory, "latent_traversal.png"),
    np.asarray(decode(z.reshape(-1, config.latent_dim))),
    len(dims),
    len(steps),
    "latent traversal: one dimension per row, others at 0",
    "dims by test KL: " + ", ".join(str(int(d)) for d in dims),
    "z_j from -3 to 3",
  )


@functools.lru_cache(maxsize=16)
def _mean_image(graphdef):
  """A jitted ``(params, z [N, L]) -> E[x|z] [N, H, W, C]``, one per model
  structure (so the figures of equal models compile it once)."""

  @jax.jit
  def decode(params, z):
    m = nnx.merge(graphdef, params)
    return m.mean_image(m.decode(z))

  return decode
