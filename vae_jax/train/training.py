"""The training step and the whole-epoch fast path, pure and jit-compiled.

The objective of one step, for a batch x_1..x_B (nats per example):

  loss = mean_i [ -log p(x_i | z_i) ] + beta_t * R

with z_i ~ q(z | x_i) reparameterised, KL_ij the analytic KL of latent
dimension j for example i, ``beta_t = beta * min(1, (step + 1) / warmup)`` (a
linear KL warm-up; ``warmup = 0`` means none) and R the KL term with the
free-bits floor lambda in one of two forms (:func:`kl_penalty`):

* per example (``free_bits_mode="per_example"``, the default):
  R = mean_i sum_j max(KL_ij, lambda), each example's KL of each dimension
  floored before the batch mean;
* batch (``"batch"``, Kingma et al. 2016, "Improved variational inference
  with inverse autoregressive flow", eq. 15 with one group per latent
  dimension): R = sum_j max(mean_i KL_ij, lambda), the minibatch-averaged KL
  of each dimension floored.

They differ as soon as some KL_ij are below lambda and others above: the
batch form lets single examples use less than lambda. With ``free_bits = 0``
both are the plain KL and, with no warm-up, the loss is the negative ELBO
with beta on the KL. The reported ``elbo`` is always the true one (beta = 1,
no floor).

Everything a step needs travels in :class:`TrainState` (step, parameters,
optimiser state, PRNG key) and a dict of scalar hyperparameters, so a sweep can
``jax.vmap`` over both. A step whose loss or update is not finite changes
nothing, and the epoch reports it (see :func:`train_epoch`).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from vae_jax import divergences
from vae_jax import prng
from vae_jax.train import data
from vae_jax.train import models

Array = jax.Array
HYPERPARAMETERS = (
  "beta",
  "free_bits",
  "free_bits_batch",
  "warmup_steps",
  "sigma2",
)
FREE_BITS_MODES = ("per_example", "batch")


class TrainState(NamedTuple):
  """All a run's mutable state, one pytree: checkpoint it whole."""

  step: Array  # int32 scalar: optimiser steps taken
  params: Any  # pure dict of arrays (``nnx.split`` of the VAE)
  opt_state: optax.OptState
  key: Array  # typed PRNG key, advanced once per epoch


def hyperparameters(
  beta: float = 1.0,
  free_bits: float = 0.0,
  warmup_steps: int = 0,
  sigma2: float = 1.0,
  free_bits_mode: str = "per_example",
) -> dict:
  """The per-run scalars of the objective, as float32 arrays (vmappable).

  ``free_bits_mode`` (one of :data:`FREE_BITS_MODES`) becomes the number
  ``free_bits_batch`` (1 for ``"batch"``, else 0), so members of a sweep
  may differ in it and still share one program."""
  if free_bits_mode not in FREE_BITS_MODES:
    raise ValueError(
      f"free_bits_mode must be one of {FREE_BITS_MODES}, got {free_bits_mode!r}"
    )
  values = dict(
    beta=beta,
    free_bits=free_bits,
    free_bits_batch=float(free_bits_mode == "batch"),
    warmup_steps=warmup_steps,
    sigma2=sigma2,
  )
  for name in ("beta", "free_bits", "warmup_steps"):
    if not values[name] >= 0:
      raise ValueError(f"{name} must be >= 0, got {values[name]}")
  if not sigma2 > 0:
    raise ValueError(f"sigma2 must be > 0, got {sigma2}")
  return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def init_state(
  model: models.VAE, optimizer: optax.GradientTransformation, key: Array
) -> tuple[nnx.GraphDef, TrainState]:
  """Splits the model into its static graph and a fresh TrainState."""
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    key=key,
  )
  return graphdef, state


def kl_weight(hparams: dict, step: Array) -> Array:
  """beta_t: beta times the linear warm-up factor at this step."""
  ramp = (step + 1).astype(jnp.float32) / jnp.maximum(
    hparams["warmup_steps"], 1.0
  )
  return hparams["beta"] * jnp.minimum(1.0, ramp)


def kl_penalty(kl: Array, hparams: dict) -> Array:
  """Each example's share of the KL term R of the loss, free bits applied
  (see the module doc): ``[B]`` whose batch mean is R.

  Args:
    kl: ``[B, L]`` KL of each example's posterior per latent dimension, nats.
    hparams: from :func:`hyperparameters` (``free_bits`` is lambda in nats
      per latent dimension; ``free_bits_batch`` chooses the form).

  Returns:
    ``[B]``, nats: ``sum_j max(KL_ij, lambda)`` (per example), or
    ``sum_j max(mean_i KL_ij, lambda)`` in every entry (batch).
  """
  floor = hparams["free_bits"]
  per_example = jnp.maximum(kl, floor).sum(axis=-1)
  batch = jnp.maximum(jnp.mean(kl, axis=0), floor).sum()
  # Both are a few dozen numbers: computing both keeps the form a traced
  # number, so a sweep can vmap over it.
  return jnp.where(hparams["free_bits_batch"] > 0, batch, per_example)


def loss_fn(
  params,
  graphdef: nnx.GraphDef,
  x: Array,
  key: Array,
  hparams: dict,
  step: Array,
) -> tuple[Array, dict]:
  """The batch loss (scalar, nats per example) and its metrics.

  Args:
    params: the model's parameters (pure dict).
    graphdef: the model's static structure.
    x: a batch ``[B, H, W, C]`` in [0, 1].
    key: randomness for the reparameterised samples.
    hparams: from :func:`hyperparameters`.
    step: the optimiser step (for the warm-up).
  """
  model = nnx.merge(graphdef, params)
  mean, log_variance = model.encode(x)
  z = models.reparameterize(key, mean, log_variance)
  # sigma-VAE (``optimal``) trains with each batch's own maximum-likelihood
  # sigma^2 (None); ``hparams["sigma2"]`` is a fixed decoder's variance.
  sigma2 = None if model.sigma2_mode == "optimal" else hparams["sigma2"]
  log_lik = models.log_likelihood(model, x, model.decode(z), sigma2)
  kl = jax.vmap(divergences.kl_standard_normal_per_dim)(mean, log_variance)
  beta_t = kl_weight(hparams, step)
  loss = jnp.mean(-log_lik + beta_t * kl_penalty(kl, hparams))
  rate = kl.sum(axis=-1)
  metrics = dict(
    loss=loss,
    elbo=jnp.mean(log_lik - rate),
    rate=jnp.mean(rate),
    distortion=jnp.mean(-log_lik),
    beta=beta_t,
  )
  return loss, metrics


def train_step(
  graphdef: nnx.GraphDef,
  optimizer: optax.GradientTransformation,
  state: TrainState,
  x: Array,
  key: Array,
  hparams: dict,
) -> tuple[TrainState, dict]:
  """One optax step on batch x; pure (jit it with graphdef and optimizer
  static). A non-finite loss or update leaves the state as it was;
  ``metrics['finite']`` says which happened."""
  new, metrics = _update(graphdef, optimizer, state, x, key, hparams)
  return _keep_if(metrics["finite"], new, state), metrics


def _step(graphdef, optimizer, state, x, key, hparams):
  """One optax step, unchecked: the new state and the loss's metrics."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, metrics), grads = grad_fn(
    state.params, graphdef, x, key, hparams, state.step
  )
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new = TrainState(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
    key=state.key,
  )
  return new, dict(metrics, updates=updates)


def _update(graphdef, optimizer, state, x, key, hparams):
  new, metrics = _step(graphdef, optimizer, state, x, key, hparams)
  updates = metrics.pop("updates")
  # The update, not just the gradient: a non-finite gradient makes it
  # non-finite too, and so does anything the optimiser itself produces.
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(
    optax.tree.norm(updates)
  )
  return new, dict(metrics, finite=finite)


def guarded_step(
  graphdef: nnx.GraphDef,
  optimizer: optax.GradientTransformation,
  state: TrainState,
  ok: Array,
  x: Array,
  key: Array,
  hparams: dict,
) -> tuple[TrainState, Array, dict]:
  """One step of an epoch that stops at its first non-finite step: with
  ``ok`` (a boolean scalar) False, or a non-finite loss or update, the state
  stays as it was and ``ok`` turns (stays) False.

  Returns:
    ``(state, ok, metrics)``; ``metrics['finite']`` is the new ``ok``.
  """
  new, metrics = _update(graphdef, optimizer, state, x, key, hparams)
  ok = ok & metrics["finite"]
  return _keep_if(ok, new, state), ok, dict(metrics, finite=ok)


def _keep_if(ok: Array, new: TrainState, old: TrainState) -> TrainState:
  return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def epoch_batches(key: Array, num_examples: int, batch_size: int) -> Array:
  """A random permutation cut into full batches: ``[S, batch_size]`` indices.

  The remainder (``num_examples % batch_size`` examples) is dropped; a
  different remainder is dropped every epoch.
  """
  steps = num_examples // batch_size
  if steps < 1:
    raise ValueError(f"batch_size {batch_size} > {num_examples} examples")
  perm = jax.random.permutation(key, num_examples)
  return perm[: steps * batch_size].reshape(steps, batch_size)


def epoch_inputs(key: Array, num_examples: int, batch_size: int):
  """What one epoch draws from the state's key: the next key, the batch
  indices ``[S, batch_size]`` and one key per step ``[S]`` (each step splits
  its key into the batch's binarization or dequantization noise and the
  reparameterisation noise, see :func:`batch_inputs`)."""
  next_key, order_key, step_key = jax.random.split(key, 3)
  batches = epoch_batches(order_key, num_examples, batch_size)
  return next_key, batches, jax.random.split(step_key, batches.shape[0])


def batch_inputs(
  raw_train: Array, idx: Array, key: Array, *, protocol: str, levels: int
) -> tuple[Array, Array]:
  """One step's images in [0, 1] (binarized or dequantized anew from the raw
  levels ``raw_train[idx]``) and its reparameterisation key.

  Drawing the data noise per batch keeps memory at O(batch) per run, so a
  sweep of K runs holds K batches, not K copies of the training set.
  """
  data_key, noise_key = prng.split(key)  # jax.random.split's keys
  return data.to_unit_interval(
    data_key, raw_train[idx], protocol, levels
  ), noise_key


def train_epoch(
  graphdef: nnx.GraphDef,
  optimizer: optax.GradientTransformation,
  state: TrainState,
  raw_train: Array,
  hparams: dict,
  *,
  batch_size: int,
  protocol: str,
  levels: int,
  active: Array | bool = True,
  check: str = "step",
) -> tuple[TrainState, dict]:
  """One pass over the training set inside one program (``lax.scan``).

  Args:
    graphdef, optimizer: static.
    state: the TrainState; its key is advanced once.
    raw_train: ``[N, H, W, C]`` uint8 levels, on the device.
    hparams: from :func:`hyperparameters`.
    batch_size, protocol, levels: static.
    active: a boolean scalar (may be traced); False makes every step a
      no-op, as if the epoch had started with a non-finite step (a sweep
      passes False for members that diverged earlier).
    check: static. ``"step"``: every step checks its loss and update and
      keeps the old state if either is not finite. ``"epoch"``: the steps
      run unchecked and the epoch checks once, at its end, that every loss
      and the whole new state are finite; if not, it is replayed from its
      start with the checks of ``"step"`` (``lax.cond``: only one of the two
      runs). The same result either way, bit for bit; ``"epoch"`` is
      cheaper where the epoch is not vmapped (under ``vmap`` the cond would
      run both).

  Returns:
    The new state and per-step metrics, each ``[S]``. If a step was not
    finite, it and every later step of the epoch leave the state unchanged;
    ``metrics['finite']`` is then False from that step on.
  """
  if check not in ("step", "epoch"):
    raise ValueError(f"check must be 'step' or 'epoch', got {check!r}")
  next_key, batches, step_keys = epoch_inputs(
    state.key, raw_train.shape[0], batch_size
  )

  def inputs_of(idx, key):
    return batch_inputs(raw_train, idx, key, protocol=protocol, levels=levels)

  def guarded(st):
    def body(carry, inputs):
      st, ok = carry
      x, noise_key = inputs_of(*inputs)
      st, ok, metrics = guarded_step(
        graphdef, optimizer, st, ok, x, noise_key, hparams
      )
      return (st, ok), metrics

    (st, _), metrics = jax.lax.scan(
      body, (st, jnp.asarray(active, jnp.bool_)), (batches, step_keys)
    )
    return st, metrics

  if check == "step":
    state, metrics = guarded(state)
    return state._replace(key=next_key), metrics

  fast, metrics, ok = unchecked_epoch(
    graphdef,
    optimizer,
    state,
    raw_train,
    hparams,
    batch_size=batch_size,
    protocol=protocol,
    levels=levels,
    active=active,
  )
  state, metrics = jax.lax.cond(
    ok, lambda: (fast, metrics), lambda: guarded(state)
  )
  return state._replace(key=next_key), metrics


def unchecked_epoch(
  graphdef: nnx.GraphDef,
  optimizer: optax.GradientTransformation,
  state: TrainState,
  raw_train: Array,
  hparams: dict,
  *,
  batch_size: int,
  protocol: str,
  levels: int,
  active: Array | bool = True,
) -> tuple[TrainState, dict, Array]:
  """:func:`train_epoch`'s steps with no per-step check, and the check once.

  Returns:
    ``(state, metrics, ok)``: the state after every step of the epoch (its
    key advanced), the per-step metrics ``[S]`` and a boolean scalar, True
    when ``active`` and every loss and the whole new state are finite. Where
    ``ok`` is True these are exactly what :func:`train_epoch` returns (any
    ``check``); where it is False the state is not to be used: run
    :func:`train_epoch` from the same start instead.
  """
  next_key, batches, step_keys = epoch_inputs(
    state.key, raw_train.shape[0], batch_size
  )

  def body(st, inputs):
    x, noise_key = batch_inputs(
      raw_train, *inputs, protocol=protocol, levels=levels
    )
    new, metrics = _step(graphdef, optimizer, st, x, noise_key, hparams)
    del metrics["updates"]
    return new, dict(metrics, finite=jnp.isfinite(metrics["loss"]))

  fast, metrics = jax.lax.scan(body, state, (batches, step_keys))
  ok = (
    jnp.asarray(active, jnp.bool_)
    & metrics["finite"].all()
    & _all_finite((fast.params, fast.opt_state))
  )
  return fast._replace(key=next_key), metrics, ok


def _all_finite(tree) -> Array:
  leaves = [
    x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def make_train_epoch(
  graphdef, optimizer, *, batch_size: int, protocol: str, levels: int
) -> Callable:
  """``train_epoch`` jitted: ``(state, raw_train, hparams) -> (state, m)``.

  The state's buffers are donated, so the caller must use the returned one.
  """

  def epoch(state, raw_train, hparams):
    return train_epoch(
      graphdef,
      optimizer,
      state,
      raw_train,
      hparams,
      batch_size=batch_size,
      protocol=protocol,
      levels=levels,
    )

  return jax.jit(epoch, donate_argnums=0)


def make_optimizer(
  learning_rate: float | optax.Schedule,
  *,
  eps: float = 1e-8,
  grad_clip: float = 0.0,
) -> optax.GradientTransformation:
  """Adam, optionally after clipping the global gradient norm."""
  adam = optax.adam(learning_rate, eps=eps)
  if grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)
  return adam


LR_SCHEDULES = ("constant", "cosine", "burda")


def learning_rate_schedule(
  name: str, learning_rate: float, *, steps_per_epoch: int, num_epochs: int
) -> optax.Schedule:
  """``constant``; ``cosine`` decay to 0 over the run; or ``burda``: the
  schedule of Burda et al. (2016), 3^i epochs at ``learning_rate * 10^(-i/7)``
  for i = 0..7 (3,280 epochs in all), then the last rate."""
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "cosine":
    return optax.cosine_decay_schedule(
      learning_rate, max(1, steps_per_epoch * num_epochs)
    )
  if name == "burda":
    boundaries, edge = {}, 0
    for i in range(1, 8):
      edge += 3 ** (i - 1) * steps_per_epoch
      boundaries[edge] = 10 ** (-1 / 7)
    return optax.piecewise_constant_schedule(learning_rate, boundaries)
  raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {name!r}")
