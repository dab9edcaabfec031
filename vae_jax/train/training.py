"""The training step and the two scanned epochs, pure and jit-compiled.

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

With k > 1 samples per example (:class:`Objective`, ``name="elbo"``) the
first term is the mean over k reparameterised samples, mean_i (1/k) sum_k
-log p(x_i | z_ik): Burda et al. (2016)'s "VAE, k", beta, free bits and the
warm-up applied as above. ``name="iwae"`` trains minus the IWAE bound,
loss = -mean_i log (1/k) sum_k w_ik (beta, free bits and warm-up do not
enter it; the config refuses them). Both come from the per-example functions
of :mod:`vae_jax.objectives`, vmapped over the batch; the k = 1 ELBO keeps
the single-sample code above, so its numbers never move. The reported
``elbo``, ``rate`` and ``distortion`` are then means over the k samples of
the single-sample terms (unbiased for the same expectations), for the IWAE
too; ``loss`` is what the step minimises.

Everything a step needs travels in :class:`TrainState` (step, parameters,
optimiser state, PRNG key) and a dict of scalar hyperparameters, so a sweep can
``jax.vmap`` over both. A step whose loss or update is not finite changes
nothing, and the epoch reports it. An epoch is one ``lax.scan`` in one of
two forms: :func:`train_epoch` guards every step (sweeps, and the replay of
a failed epoch); :func:`unchecked_epoch` checks once at its end (a single
run's epoch).
"""

import dataclasses
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from vae_jax import divergences
from vae_jax import objectives
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
OBJECTIVES = ("elbo", "iwae")
IWAE_GRADIENTS = ("reparam", "dreg")


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a step maximises, and from how many samples: static (it shapes
  the compiled program), so members that differ in it are separate groups.

  Attributes:
    name: ``"elbo"`` (with beta, free bits and warm-up) or ``"iwae"`` (the
      IWAE bound; see the module doc).
    samples: k >= 1 reparameterised samples per example.
    gradient: the IWAE's gradient estimator, ``"reparam"`` or ``"dreg"``
      (Tucker et al. 2019; :func:`vae_jax.iwae_objective`); the ELBO's is
      always ``"reparam"``.
  """

  name: str = "elbo"
  samples: int = 1
  gradient: str = "reparam"

  def __post_init__(self):
    if self.name not in OBJECTIVES:
      raise ValueError(
        f"objective must be one of {OBJECTIVES}, got {self.name!r}"
      )
    samples = self.samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
      raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    if self.gradient not in IWAE_GRADIENTS:
      raise ValueError(
        f"gradient must be one of {IWAE_GRADIENTS}, got {self.gradient!r}"
      )
    if self.gradient == "dreg" and self.name != "iwae":
      raise ValueError("gradient='dreg' is the IWAE's; the ELBO's is 'reparam'")


# The one-sample ELBO, every step's default: the module doc's first loss.
ELBO = Objective()


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
  graphdef, variables = nnx.split(model)
  params = nnx.to_pure_dict(variables)
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
  objective: Objective = ELBO,
) -> tuple[Array, dict]:
  """The batch loss (scalar, nats per example) and its metrics.

  Args:
    params: the model's parameters (pure dict).
    graphdef: the model's static structure.
    x: a batch ``[B, H, W, C]`` in [0, 1].
    key: randomness for the reparameterised samples.
    hparams: from :func:`hyperparameters`.
    step: the optimiser step (for the warm-up).
    objective: static; anything but the default is
      :func:`multi_sample_loss`.
  """
  if objective != ELBO:
    return multi_sample_loss(params, graphdef, x, key, hparams, step, objective)
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


def multi_sample_loss(
  params,
  graphdef: nnx.GraphDef,
  x: Array,
  key: Array,
  hparams: dict,
  step: Array,
  objective: Objective,
) -> tuple[Array, dict]:
  """:func:`loss_fn` of k samples per example, or of the IWAE (module doc).

  The noise is ``normal(key, [B, k, L])`` (at k = 1 the single-sample
  path's draws); each example's bound is :func:`vae_jax.multi_sample_elbo`
  (closed-form KL) or :func:`vae_jax.iwae_objective`, in their batch forms
  (:func:`vae_jax.multi_sample_elbo_batch`, :func:`vae_jax.iwae_objective_batch`)
  so that the decoder runs once on all B x k samples. The ELBO's loss puts
  the beta- and free-bits-weighted KL in place of the plain KL: ``mean_i
  [D_i + beta_t * R_i]`` with D_i = -(ELBO_i + KL_i), the mean distortion
  over the k samples.
  """
  model = nnx.merge(graphdef, params)
  if model.sigma2_mode == "optimal" and model.decoder_kind.uses_sigma2:
    raise ValueError(
      "sigma2_mode='optimal' (one sigma^2 fitted to the batch) trains with "
      "one sample per example and the ELBO only"
    )
  mean, log_variance = model.encode(x)
  batch, latent = mean.shape
  samples = objective.samples
  eps = jax.random.normal(key, (batch, samples, latent), mean.dtype)
  x_each = jnp.repeat(x, samples, axis=0)  # x_b for each of its k samples

  def log_likelihoods(z):  # [B, k, L] -> log p(x_b | z_bk), [B, k]
    output = model.decode(z.reshape(batch * samples, latent))
    log_lik = models.log_likelihood(model, x_each, output, hparams["sigma2"])
    return log_lik.reshape(batch, samples)

  bound_args = (log_likelihoods, mean, log_variance, eps)
  # Under jit the two bounds share one decoder pass (XLA merges them).
  elbo = objectives.multi_sample_elbo_batch(*bound_args)
  kl = jax.vmap(divergences.kl_standard_normal_per_dim)(mean, log_variance)
  rate = kl.sum(axis=-1)
  distortion = -(elbo + rate)
  beta_t = kl_weight(hparams, step)
  if objective.name == "iwae":
    bound = objectives.iwae_objective_batch(
      *bound_args, gradient=objective.gradient
    )
    loss = -jnp.mean(bound)
  else:
    loss = jnp.mean(distortion + beta_t * kl_penalty(kl, hparams))
  metrics = dict(
    loss=loss,
    elbo=jnp.mean(elbo),
    rate=jnp.mean(rate),
    distortion=jnp.mean(distortion),
    beta=beta_t,
  )
  return loss, metrics


def _step(graphdef, optimizer, state, x, key, hparams, objective=ELBO):
  """One optax step, unchecked: the new state and the loss's metrics."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, metrics), grads = grad_fn(
    state.params, graphdef, x, key, hparams, state.step, objective
  )
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new = TrainState(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
    key=state.key,
  )
  return new, dict(metrics, updates=updates)


def _update(graphdef, optimizer, state, x, key, hparams, objective):
  new, metrics = _step(graphdef, optimizer, state, x, key, hparams, objective)
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
  *,
  objective: Objective = ELBO,
) -> tuple[TrainState, Array, dict]:
  """One step of an epoch that stops at its first non-finite step: with
  ``ok`` (a boolean scalar) False, or a non-finite loss or update, the state
  stays as it was and ``ok`` turns (stays) False. ``objective`` is static
  (:func:`loss_fn`).

  Returns:
    ``(state, ok, metrics)``; ``metrics['finite']`` is the new ``ok``.
  """
  new, metrics = _update(graphdef, optimizer, state, x, key, hparams, objective)
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
  objective: Objective = ELBO,
) -> tuple[TrainState, dict]:
  """One pass over the training set inside one program (``lax.scan``),
  every step guarded (:func:`guarded_step`).

  Args:
    graphdef, optimizer: static.
    state: the TrainState; its key is advanced once.
    raw_train: ``[N, H, W, C]`` uint8 levels, on the device.
    hparams: from :func:`hyperparameters`.
    batch_size, protocol, levels, objective: static.
    active: a boolean scalar (may be traced); False makes every step a
      no-op, as if the epoch had started with a non-finite step (a sweep
      passes False for members that diverged earlier).

  Returns:
    The new state and per-step metrics, each ``[S]``. If a step was not
    finite, it and every later step of the epoch leave the state unchanged;
    ``metrics['finite']`` is then False from that step on.
  """
  next_key, batches, step_keys = epoch_inputs(
    state.key, raw_train.shape[0], batch_size
  )

  def body(carry, inputs):
    st, ok = carry
    x, noise_key = batch_inputs(
      raw_train, *inputs, protocol=protocol, levels=levels
    )
    st, ok, metrics = guarded_step(
      graphdef, optimizer, st, ok, x, noise_key, hparams, objective=objective
    )
    return (st, ok), metrics

  (state, _), metrics = jax.lax.scan(
    body, (state, jnp.asarray(active, jnp.bool_)), (batches, step_keys)
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
  objective: Objective = ELBO,
) -> tuple[TrainState, dict, Array]:
  """:func:`train_epoch`'s steps with no per-step check, and the check once.

  Returns:
    ``(state, metrics, ok)``: the state after every step of the epoch (its
    key advanced), the per-step metrics ``[S]`` and a boolean scalar, True
    when ``active`` and every loss and the whole new state are finite. Where
    ``ok`` is True these are exactly what :func:`train_epoch` returns; where
    it is False the state is not to be used: run :func:`train_epoch` from
    the same start instead.
  """
  next_key, batches, step_keys = epoch_inputs(
    state.key, raw_train.shape[0], batch_size
  )

  def body(st, inputs):
    x, noise_key = batch_inputs(
      raw_train, *inputs, protocol=protocol, levels=levels
    )
    new, metrics = _step(
      graphdef, optimizer, st, x, noise_key, hparams, objective
    )
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


ADAM_VARIANTS = ("standard", "burda2016")


def make_optimizer(
  learning_rate: float | optax.Schedule,
  *,
  eps: float = 1e-8,
  grad_clip: float = 0.0,
  b1: float = 0.9,
  b2: float = 0.999,
  variant: str = "standard",
  batch_size: int = 1,
) -> optax.GradientTransformation:
  """Adam, optionally after clipping the global gradient norm.

  ``variant``: ``"standard"`` (``optax.adam``) or ``"burda2016"``
  (:func:`burda2016_adam`, which reads ``batch_size``)."""
  if variant == "standard":
    adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  elif variant == "burda2016":
    adam = burda2016_adam(
      learning_rate, b1=b1, b2=b2, eps=eps, gradient_scale=batch_size
    )
  else:
    raise ValueError(
      f"adam_variant must be one of {ADAM_VARIANTS}, got {variant!r}"
    )
  if grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)
  return adam


class BurdaAdamState(NamedTuple):
  """:func:`burda2016_adam`'s state."""

  steps: Array  # int32: updates made
  mu: Any  # first moments, of the scaled gradients
  nu: Any  # second moments, starting at one


def burda2016_adam(
  learning_rate: float | optax.Schedule,
  *,
  b1: float,
  b2: float,
  eps: float,
  gradient_scale: float,
) -> optax.GradientTransformation:
  """Adam as the code of Burda et al. (2016) runs it (yburda/iwae,
  ``optimizers.py``), which differs from Kingma & Ba's in four ways:

  * its gradient is of the batch SUM of the objective: here the mean loss's
    gradient times ``gradient_scale`` (the batch size), which matters
    through ``eps`` and the starting second moment;
  * the second moment starts at one, not zero, while the bias correction
    still assumes zero (early steps are small: a warm-up over ~1/(1 - b2)
    steps);
  * ``eps`` is added to sqrt(v), outside the bias correction:
    ``-lr_t sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``;
  * every Theano update reads the values from before the step, so step t
    (t = 1, 2, ...) moves the parameters by the moments of steps 1..t-1
    (the first step moves nothing) with the timestep t.
  """
  schedule = (
    learning_rate if callable(learning_rate) else (lambda _: learning_rate)
  )

  def init(params):
    return BurdaAdamState(
      steps=jnp.zeros((), jnp.int32),
      mu=jax.tree.map(jnp.zeros_like, params),
      nu=jax.tree.map(jnp.ones_like, params),
    )

  def update(grads, state, params=None):
    del params
    t = (state.steps + 1).astype(jnp.float32)
    step = schedule(state.steps) * jnp.sqrt(1 - b2**t) / (1 - b1**t)
    updates = jax.tree.map(
      lambda m, v: -step * m / (jnp.sqrt(v) + eps), state.mu, state.nu
    )
    g = jax.tree.map(lambda x: gradient_scale * x, grads)
    mu = jax.tree.map(lambda m, x: b1 * m + (1 - b1) * x, state.mu, g)
    nu = jax.tree.map(lambda v, x: b2 * v + (1 - b2) * x * x, state.nu, g)
    return updates, BurdaAdamState(state.steps + 1, mu, nu)

  return optax.GradientTransformation(init, update)


LR_SCHEDULES = ("constant", "cosine", "burda")
BURDA_STAGES = 8


def burda_stage_epochs(stages: int = BURDA_STAGES) -> list[int]:
  """Epochs of each stage of the ``burda`` schedule: 3^i for i < stages."""
  return [3**i for i in range(stages)]


def burda_learning_rates(learning_rate: float) -> list[float]:
  """The ``burda`` schedule's rate in each stage i = 0..7: as Burda et al.'s
  code sets it, ``learning_rate * round(10^(1 - i/7), 1) / 10``, their
  paper's ``learning_rate * 10^(-i/7)`` rounded to two digits (1e-3, 7.2e-4,
  5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4)."""
  return [
    learning_rate * round(10 ** (1 - i / 7), 1) / 10
    for i in range(BURDA_STAGES)
  ]


def learning_rate_schedule(
  name: str, learning_rate: float, *, steps_per_epoch: int, num_epochs: int
) -> optax.Schedule:
  """``constant``; ``cosine`` decay to 0 over the run; or ``burda``: the
  schedule of Burda et al. (2016), 3^i epochs at the rate of stage i
  (:func:`burda_learning_rates`) for i = 0..7 (3,280 epochs in all), then
  the last rate."""
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "cosine":
    return optax.cosine_decay_schedule(
      learning_rate, max(1, steps_per_epoch * num_epochs)
    )
  if name == "burda":
    epochs = burda_stage_epochs()[:-1]
    edges = jnp.asarray(
      [sum(epochs[: i + 1]) * steps_per_epoch for i in range(len(epochs))]
    )
    rates = jnp.asarray(burda_learning_rates(learning_rate), jnp.float32)
    return lambda count: rates[jnp.searchsorted(edges, count, side="right")]
  raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {name!r}")
