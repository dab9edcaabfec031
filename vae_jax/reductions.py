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
from collections.abc import Sequence
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
  per_example_fn: Callable[..., Array],
  reduction: str = "mean",
  *,
  event_ndim: int | Sequence[int] | None = None,
) -> Callable[..., Array]:
  """Vmaps a per-example function over a leading batch axis and reduces it.

  Positional arguments carry the batch axis (axis 0); keyword arguments are
  shared by all examples (e.g. ``sigma2=0.5`` or ``beta=4.0``)::

    loss = batched(vae_jax.bernoulli_log_likelihood)(x, logits)   # [B, ...] -> ()

  A per-example function sums over every axis it is given: it cannot tell a
  batch ``[B, D]`` from one example of shape ``[B, D]``. ``event_ndim`` says
  how many axes one example has, and the batched function then checks it::

    nll = batched(vae_jax.bernoulli_log_likelihood, event_ndim=3)  # [B, H, W, C]

  Args:
    per_example_fn: maps one example to a scalar.
    reduction: ``"mean"`` (default), ``"sum"``, or ``"none"`` for the ``[B]``
      per-example values.
    event_ndim: the rank of one example: an int for every positional
      argument, or one int per positional argument (e.g. ``(3, 3, 1, 1)`` for
      images, logits, a posterior mean and log-variance). None: no check.

  Returns:
    The batched function. With ``event_ndim``, a positional argument whose
    rank is not ``event_ndim + 1`` raises ValueError at trace time, naming
    its position and shape.

  Example:
    >>> import jax.numpy as jnp, vae_jax
    >>> x, logits = jnp.array([[0.0, 1.0], [1.0, 1.0]]), jnp.zeros((2, 2))
    >>> fn = vae_jax.bernoulli_log_likelihood
    >>> round(float(vae_jax.batched(fn)(x, logits)), 4)  # mean of 2 log(1/2)
    -1.3863
    >>> vae_jax.batched(fn, 'none')(x, logits).shape
    (2,)
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(
      f"reduction must be one of {sorted(_REDUCTIONS)}, got {reduction!r}."
    )
  reduce = _REDUCTIONS[reduction]

  def batched_fn(*args, **shared):
    if event_ndim is not None:
      ranks = (
        [event_ndim] * len(args)
        if isinstance(event_ndim, int)
        else list(event_ndim)
      )
      if len(ranks) != len(args):
        raise ValueError(
          f"event_ndim gives {len(ranks)} ranks for {len(args)} positional "
          "arguments."
        )
      for i, (arg, rank) in enumerate(zip(args, ranks)):
        if jnp.ndim(arg) != rank + 1:
          raise ValueError(
            f"positional argument {i} has shape {jnp.shape(arg)}: expected a "
            f"batch of examples of rank {rank}, i.e. rank {rank + 1}."
          )
    return reduce(jax.vmap(functools.partial(per_example_fn, **shared))(*args))

  return batched_fn
