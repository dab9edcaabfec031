"""Input validation at the boundary of the public functions.

Shape and dtype errors are raised at trace time (they need no values). Value
checks (domains such as ``x in [0, 1]`` or ``sigma2 > 0``) run eagerly when the
input is concrete, and otherwise are staged as ``checkify.debug_check``: free
under a plain ``jax.jit``, enforced under :func:`checked`.
"""

from collections.abc import Callable
import contextvars
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

Array = jax.Array


def float_array(name: str, value: Any, *, scalar_ok: bool = False) -> Any:
  """Returns ``value`` unchanged if it is a floating array, or raises naming ``name``.

  Arrays are not converted, so a concrete NumPy input stays concrete (and
  value-checkable) even inside ``jax.jit``. Python numbers are accepted only
  where ``scalar_ok``; they come back as a Python float, which stays weakly
  typed and so follows the dtype of the other arguments.
  """
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be a floating-point array, got a bool.")
  if scalar_ok and isinstance(value, (int, float)):
    return float(value)
  if not isinstance(value, (jax.Array, np.ndarray, np.generic)):
    kind = (
      "a scalar" if isinstance(value, (int, float)) else type(value).__name__
    )
    raise TypeError(
      f"{name} must be a jax.Array or numpy.ndarray, got {kind}; wrap it with"
      " jnp.asarray(..., dtype=jnp.float32)."
    )
  if not jnp.issubdtype(value.dtype, jnp.floating):
    raise TypeError(
      f"{name} has dtype {value.dtype}, but a floating dtype is needed; cast"
      f" it first, e.g. {name}.astype(jnp.float32)."
    )
  return value


def same_shape(*named: tuple[str, Array]) -> None:
  """Raises unless all the named arrays have one shape (no broadcasting)."""
  (first_name, first), *rest = named
  for name, value in rest:
    if value.shape != first.shape:
      raise ValueError(
        f"{name} has shape {value.shape} but {first_name} has shape"
        f" {first.shape}; they must match exactly. These functions take one"
        " example: jax.vmap over the batch axis."
      )


def broadcastable_to(
  name: str, value: Array, target_name: str, target: Array
) -> None:
  """Raises unless ``value`` broadcasts to ``target.shape`` without growing it."""
  try:
    shape = jnp.broadcast_shapes(jnp.shape(value), target.shape)
  except ValueError:
    shape = None
  if shape != target.shape:
    raise ValueError(
      f"{name} has shape {jnp.shape(value)}, which does not broadcast to the shape"
      f" {target.shape} of {target_name}."
    )


def at_least_rank(name: str, value: Array, rank: int) -> None:
  if value.ndim < rank:
    raise ValueError(
      f"{name} must have at least {rank} dimension(s), got shape {value.shape}."
    )


def values(
  name: str, value: Array, ok: Callable[[Array], Array], requirement: str
) -> None:
  """Checks ``ok(value)`` holds elementwise; ``requirement`` reads "must ...".

  Concrete input (even inside ``jax.jit``): evaluated with NumPy, raises
  ValueError now. Traced input: stages a debug check, which :func:`checked`
  turns into an error and plain ``jax.jit`` drops. ``ok`` must work on NumPy
  and JAX arrays alike (comparisons, ``&``, ``~``).
  """
  message = f"{name} must {requirement}"
  if isinstance(value, jax.core.Tracer) or _STAGING.get():
    checkify.debug_check(jnp.all(ok(value)), message + " (found a violation)")
    return
  host = np.asarray(value)
  good = np.asarray(ok(host))
  if not good.all():
    bad = host[~good] if good.shape else host
    raise ValueError(
      f"{message}; found {np.size(bad)} value(s) that do not,"
      f" e.g. {bad.ravel()[0].item()!r}."
    )


def unit_interval(name: str, value: Array) -> None:
  values(name, value, lambda v: (v >= 0) & (v <= 1), "lie in [0, 1] (no NaN)")


def not_nan(name: str, value: Array) -> None:
  values(name, value, lambda v: v == v, "not contain NaN")  # NaN != NaN


def positive(name: str, value: Array) -> None:
  values(name, value, lambda v: v > 0, "be > 0 (no NaN)")


def positive_finite(name: str, value: Array) -> None:
  values(name, value, lambda v: (v > 0) & (v < np.inf), "be finite and > 0")


def non_negative_finite(name: str, value: Array) -> None:
  values(name, value, lambda v: (v >= 0) & (v < np.inf), "be finite and >= 0")


def not_infinite(name: str, value: Array) -> None:
  values(name, value, lambda v: ~(abs(v) == np.inf), "not be +-inf")


# Set while `checked` traces a function: every value check is then staged,
# concrete inputs too, so it returns (error, output) instead of raising.
_STAGING = contextvars.ContextVar("vae_jax_checks_staging", default=False)


def checked(
  fn: Callable[..., Any], errors: frozenset = checkify.user_checks
) -> Callable[..., Any]:
  """Returns ``fn`` with its domain checks enforced, also under ``jax.jit``.

  The result returns ``(error, output)`` and never raises for a value
  (concrete inputs, Python numbers and NumPy constants included); call
  ``error.throw()`` to raise::

    err, ll = jax.jit(checked(bernoulli_log_likelihood))(x, logits)
    err.throw()   # ValueError-like JaxRuntimeError naming the argument

  Args:
    fn: any function built from this package's public functions.
    errors: which checkify errors to enforce; add ``checkify.nan_checks`` to
      also catch a NaN produced anywhere inside ``fn``.
  """

  @functools.wraps(fn)
  def staged(*args, **kwargs):
    token = _STAGING.set(True)
    try:
      return fn(*args, **kwargs)
    finally:
      _STAGING.reset(token)

  return checkify.checkify(staged, errors=errors)
