"""Typed PRNG keys (``jax.random.key``) in checkpoints and across devices."""

import jax


def is_prng_key(x) -> bool:
  """Whether ``x`` is a typed PRNG key array (``jax.random.key``)."""
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
    x.dtype, jax.dtypes.prng_key
  )
