"""The reduction contract, in one place.

1. Per example: a log-likelihood or KL is SUMMED over every data (or latent)
   dimension, giving one scalar in nats per example. Never a mean over pixels:
   that divides the reconstruction term by D and so silently multiplies beta
   by D.
2. Over the batch: the caller reduces, by default with the MEAN over examples
   (so the loss and beta do not depend on the batch size). ``batched`` does
   this for you.
"""

from collections.abc import Callable
import functools

import jax
import jax.numpy as jnp

Array = jax.Array

_REDUCTIONS = {"mean": jnp.mean, "sum": jnp.sum, "none": lambda v: v}


def sum_over_data(terms: Array) -> Array:
  """Sums all elements of one example's terms; half precision accumulates in float32.

  Args:
    terms: elementwise terms of one example, any shape.

  Returns:
    Scalar of the dtype of ``terms``.
  """
  acc = jnp.promote_types(terms.dtype, jnp.float32)
  return jnp.sum(terms, dtype=acc).astype(terms.dtype)


def batched(
  per_example_fn: Callable[..., Array], reduction: str = "mean"
) -> Callable[..., Array]:
  """Vmaps a per-example function over a leading batch axis and reduces it.

  Positional arguments carry the batch axis (axis 0); keyword arguments are
  shared by all examples (e.g. ``sigma2=0.5`` or ``beta=4.0``)::

    loss = batched(vae_jax.bernoulli_log_likelihood)(x, logits)   # [B, ...] -> ()

  Args:
    per_example_fn: maps one example to a scalar.
    reduction: ``"mean"`` (default), ``"sum"``, or ``"none"`` for the ``[B]``
      per-example values.

  Returns:
    The batched function.
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(
      f"reduction must be one of {sorted(_REDUCTIONS)}, got {reduction!r}."
    )
  reduce = _REDUCTIONS[reduction]

  def batched_fn(*args, **shared):
    return reduce(jax.vmap(functools.partial(per_example_fn, **shared))(*args))

  return batched_fn
