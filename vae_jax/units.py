"""Unit conversions for reported likelihoods."""

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def nats_to_bits_per_dim(nats: Array | float, num_dims: int) -> Array:
  """Converts a per-example negative log-likelihood in nats to bits/dim.

  bits/dim = nats / (D ln 2). For a continuous density fitted to data that
  were discrete (e.g. 8-bit pixels scaled to [0, 1]), add the dequantisation
  term D log(256) to ``nats`` first, or the figure is not comparable.

  Args:
    nats: negative log-likelihood(s) per example, any shape.
    num_dims: D, the number of data dimensions of one example (784 for MNIST).

  Returns:
    Bits per dimension, same shape as ``nats``.

  Example:
    >>> import vae_jax
    >>> round(float(vae_jax.nats_to_bits_per_dim(100.0, 784)), 4)
    0.184
  """
  if (
    isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1
  ):
    raise ValueError(f"num_dims must be a positive int, got {num_dims!r}.")
  return jnp.asarray(nats) / (num_dims * math.log(2.0))
