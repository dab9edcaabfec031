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
ArrayLike = jax.typing.ArrayLike


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
  name: str, value: ArrayLike, target_name: str, target: Array
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


def scalar(name: str, value: Any) -> None:
  """Raises unless ``value`` has shape ``[]`` (one number, not a vector)."""
  if jnp.shape(value) != ():
    raise ValueError(
      f"{name} must be a scalar (shape []), got shape {jnp.shape(value)}."
    )


def not_empty(name: str, value: Array) -> None:
  """Raises if ``value`` has no elements (its size is known at trace time)."""
  if value.size == 0:
    raise ValueError(f"{name} must not be empty, got shape {value.shape}.")


def at_least_rank(name: str, value: Array, rank: int) -> None:
  if value.ndim < rank:
    raise ValueError(
      f"{name} must have at least {rank} dimension(s), got shape {value.shape}."
    )


def values(
  name: str, value: ArrayLike, ok: Callable[[Any], Any], requirement: str
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


def unit_interval(name: str, value: ArrayLike) -> None:
  values(name, value, lambda v: (v >= 0) & (v <= 1), "lie in [0, 1] (no NaN)")


def not_nan(name: str, value: ArrayLike) -> None:
  values(name, value, lambda v: v == v, "not contain NaN")  # NaN != NaN


def positive(name: str, value: ArrayLike) -> None:
  values(name, value, lambda v: v > 0, "be > 0 (no NaN)")


def positive_finite(name: str, value: ArrayLike) -> None:
  values(name, value, lambda v: (v > 0) & (v < np.inf), "be finite and > 0")


def non_negative_finite(name: str, value: ArrayLike) -> None:
  values(name, value, lambda v: (v >= 0) & (v < np.inf), "be finite and >= 0")


def not_infinite(name: str, value: ArrayLike) -> None:
  values(name, value, lambda v: ~(abs(v) == np.inf), "not be +-inf")


def finite(name: str, value: ArrayLike) -> None:
  values(name, value, lambda v: abs(v) < np.inf, "be finite (no NaN or +-inf)")


def on_grid(name: str, value: Array, levels: int) -> None:
  """Checks every value is k / (levels - 1) for an integer k, up to rounding.

  The tolerance, 4 eps (levels - 1) in units of one level, covers rounding
  k / (levels - 1) and this check in the value's dtype; in half precision it
  admits anything (256 levels need more than its 8 or 11 significant bits).
  """
  n = levels - 1
  tol = 4 * float(jnp.finfo(value.dtype).eps) * n
  values(
    name,
    value,
    lambda v: abs((v * n + 0.5) % 1 - 0.5) <= tol,
    f"lie on the grid k / {n} for integers k (levels = {levels})",
  )


def integer(name: str, value: Any, *, at_least: int) -> int:
  """Returns ``value`` as an int if it is an integer >= ``at_least``, or raises naming ``name``.

  Python and NumPy integers only: the value is static, never traced.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
    value, (int, np.integer)
  ):
    raise TypeError(
      f"{name} must be a Python int (static under jax.jit), got"
      f" {type(value).__name__} {value!r}."
    )
  if value < at_least:
    raise ValueError(f"{name} must be an int >= {at_least}, got {value}.")
  return int(value)


def with_trailing_axis(
  name: str, value: Array, target_name: str, target: Array
) -> None:
  """Raises unless ``value`` has the shape of ``target`` plus one axis of size >= 1."""
  if value.shape[:-1] != target.shape or value.ndim != target.ndim + 1:
    raise ValueError(
      f"{name} has shape {value.shape}, but {target_name} has shape"
      f" {target.shape}: it needs that shape plus one trailing axis, e.g."
      f" {(*target.shape, 5)}."
    )
  if value.shape[-1] < 1:
    raise ValueError(f"{name} has an empty trailing axis: {value.shape}.")


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

  Example:
    >>> import jax, jax.numpy as jnp, vae_jax
    >>> fn = jax.jit(vae_jax.checked(vae_jax.bernoulli_log_likelihood))
    >>> err, ll = fn(jnp.array([0.5, 2.0]), jnp.zeros(2))
    >>> err.get().split(' (')[0]
    'x must lie in [0, 1]'
    >>> err, ll = fn(jnp.array([0.5, 1.0]), jnp.zeros(2))
    >>> err.get() is None, round(float(ll), 4)
    (True, -1.3863)
  """

  @functools.wraps(fn)
  def staged(*args, **kwargs):
    token = _STAGING.set(True)
    try:
      return fn(*args, **kwargs)
    finally:
      _STAGING.reset(token)

  return checkify.checkify(staged, errors=errors)
