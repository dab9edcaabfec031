"""jax.random's bits, uniforms and Bernoullis, bit for bit, in one fused loop.

A training step draws one random 32-bit word per pixel (dynamic binarization
or uniform dequantization). ``jax.random`` hashes each word with Threefry-2x32
(20 rounds of add, rotate, xor); on CPU JAX lowers those rounds as a rolled
loop (5 iterations, to keep compile times short), which XLA cannot fuse with
the comparison that consumes the bits, so every round reads and writes whole
arrays. Here the same rounds are written out, so hash and consumer compile to
one loop over the pixels: several times faster on CPU, with identical
output.

Identical means: :func:`bits`, :func:`uniform`, :func:`bernoulli` and
:func:`split` return exactly what their namesakes in
``jax.random`` return (uint32 bits, float32 draws), for typed
Threefry keys (``jax.random.key``, JAX's default) under JAX's default
``jax_threefry_partitionable=True``, where word i of a draw is word 0 xor word
1 of Threefry-2x32(key, (0, i)). Any other key type, setting, dtype or a draw
of 2^32 or more words goes to ``jax.random`` itself, so callers never see a
different stream. The tests hold both to bit equality.
"""

import functools
import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Threefry-2x32's rotation constants and key-schedule parity (Salmon et al.,
# 2011, "Parallel random numbers: as easy as 1, 2, 3").
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


@functools.partial(jax.jit, inline=True)  # one program when called eagerly
def _threefry_2x32(
  k0: Array, k1: Array, x0: Array, x1: Array
) -> tuple[Array, Array]:
  """Threefry-2x32 of the counter pairs (x0, x1) under key (k0, k1): 20
  rounds in 5 groups of 4, a key injection after each group. Elementwise,
  all uint32."""
  keys = (k0, k1, k0 ^ k1 ^ np.uint32(_PARITY))
  x0, x1 = x0 + keys[0], x1 + keys[1]
  for group in range(5):
    for r in _ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
      x1 = x0 ^ x1
    x0 = x0 + keys[(group + 1) % 3]
    x1 = x1 + keys[(group + 2) % 3] + np.uint32(group + 1)
  return x0, x1


def _fusable(key: Array, shape) -> bool:
  return (
    isinstance(key, jax.Array)
    and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    and key.shape == ()
    and str(jax.random.key_impl(key)) == "threefry2x32"
    and jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
    and math.prod(shape) < 2**32
  )


def bits(key: Array, shape) -> Array:
  """``jax.random.bits(key, shape, jnp.uint32)``, fusable with its consumer.

  Args:
    key: a typed PRNG key, scalar (vmap for many).
    shape: the output shape.

  Returns:
    uint32 array of ``shape``.
  """
  shape = tuple(shape)
  if not _fusable(key, shape):
    return jax.random.bits(key, shape, jnp.uint32)
  k0, k1 = jax.random.key_data(key)
  counter = lax.iota(np.uint32, math.prod(shape)).reshape(shape)
  x0, x1 = _threefry_2x32(k0, k1, jnp.zeros(shape, np.uint32), counter)
  return x0 ^ x1


def uniform(key: Array, shape) -> Array:
  """``jax.random.uniform(key, shape, jnp.float32)``: float32 in [0, 1)."""
  shape = tuple(shape)
  if not _fusable(key, shape):
    return jax.random.uniform(key, shape, jnp.float32)
  # The 23 high bits become the mantissa of a float in [1, 2), minus 1.
  mantissa = (bits(key, shape) >> np.uint32(32 - 23)) | np.uint32(0x3F800000)
  floats = lax.bitcast_convert_type(mantissa, np.float32) - np.float32(1)
  return lax.max(np.float32(0), floats)


def split(key: Array, num: int = 2) -> Array:
  """``jax.random.split(key, num)``: ``num`` new typed keys, ``[num]``.

  Key i is the Threefry-2x32 hash of the counter (0, i), both words kept."""
  if not _fusable(key, (num,)):
    return jax.random.split(key, num)
  k0, k1 = jax.random.key_data(key)
  counter = lax.iota(np.uint32, num)
  x0, x1 = _threefry_2x32(k0, k1, jnp.zeros((num,), np.uint32), counter)
  return jax.random.wrap_key_data(
    jnp.stack([x0, x1], axis=1), impl="threefry2x32"
  )


def bernoulli(key: Array, p: Array) -> Array:
  """``jax.random.bernoulli(key, p)``: bool array of ``p``'s shape, True
  with probability p (float32 p)."""
  p = jnp.asarray(p)
  if p.dtype != np.float32:
    return jax.random.bernoulli(key, p)
  return uniform(key, p.shape) < p


def is_key(x) -> bool:
  """Whether ``x`` is a typed PRNG key array (``jax.random.key``), as
  opposed to raw uint32 key data."""
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
    x.dtype, jax.dtypes.prng_key
  )
