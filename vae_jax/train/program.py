"""K members as one program: the member axis, its devices and its compiled steps.

Everything the engine trains is a *group* of K members that share one
program: the same model structure, optimiser, data and batch size, differing
only in numbers (beta, sigma^2, free bits, warm-up, seed). Their TrainStates
are stacked on a leading axis of size K and their hyperparameters are a dict
of ``[K]`` arrays. A single run is a group of one member, and then no vmap is
put around it (:func:`map_members`), so it compiles the same program as a
plain jitted epoch.

One epoch of all members is ``training.train_epoch`` mapped over the member
axis inside one ``jax.jit`` (on CPU two members at a time in a loop inside
the program, see :func:`members_at_once`): each member draws its own data
order, binarization and noise from its own key and keeps its own optimiser
state, while the raw training images are one shared array.

The member axis is sharded over a one-axis device mesh named ``"members"``
(:func:`make_mesh`): every device, of every process under
``jax.distributed``, holds K / num_devices whole members, so training needs no
communication between devices. K is padded to a multiple of the device count
with copies of the group's first member (:func:`padded_size`); the copies are
dropped from every result.

A member whose loss or update turns non-finite is frozen at its last finite
state and marked dead in :class:`GroupState`; the others go on.
"""

from collections.abc import Callable
import dataclasses
import functools
from typing import Any, NamedTuple

from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from vae_jax import divergences
from vae_jax import prng
from vae_jax.train import data
from vae_jax.train import evaluation
from vae_jax.train import models
from vae_jax.train import training

Array = jax.Array
AXIS = "members"


class GroupState(NamedTuple):
  """The state of a group of K members; every leaf has a leading ``[K]``."""

  train: training.TrainState
  alive: Array  # bool [K]: False once a step was non-finite
  diverged_step: Array  # int32 [K]: that step (1-based), 0 if none


def initial_state(train_states: list[training.TrainState]) -> GroupState:
  """Stacks the members' fresh TrainStates; all alive."""
  k = len(train_states)
  return GroupState(
    train=stack(train_states),
    alive=jnp.ones(k, jnp.bool_),
    diverged_step=jnp.zeros(k, jnp.int32),
  )


# --------------------------------------------------------------------------
# Devices.


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A one-axis mesh named ``"members"`` over ``devices`` (default: all
  devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(
    np.asarray(devices), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def padded_size(num_members: int, num_devices: int) -> int:
  """The smallest multiple of ``num_devices`` that is >= ``num_members``."""
  return -(-num_members // num_devices) * num_devices


def member_sharding(mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def replicated(mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def place(tree, sharding):
  """Host values (the same on every process) -> global arrays laid out by
  ``sharding``; each process builds only its own shards. Typed PRNG keys
  stay typed."""

  def one(leaf):
    if prng.is_key(leaf):
      return jax.random.wrap_key_data(
        place(jax.random.key_data(leaf), sharding)
      )
    host = np.asarray(leaf)
    return jax.make_array_from_callback(
      host.shape, sharding, lambda index: host[index]
    )

  return jax.tree.map(one, tree)


def gather(tree):
  """Global arrays -> NumPy arrays of their full values, on every process
  (a collective under ``jax.distributed``: all processes must call it)."""

  def one(leaf):
    if prng.is_key(leaf):
      leaf = jax.random.key_data(leaf)
    if leaf.is_fully_addressable:
      return np.asarray(leaf)
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

  return jax.tree.map(one, tree)


def stack(trees: list) -> Any:
  """Stacks per-member pytrees (typed keys included) on a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def take(tree, m: int):
  """Entry ``m`` of a pytree stacked on a leading member axis."""
  return jax.tree.map(lambda leaf: leaf[m], tree)


# --------------------------------------------------------------------------
# Mapping a per-member function over the member axis.

# Members vmapped together on CPU, in a loop over such pairs inside the
# program: XLA:CPU's batched matrix products are slower than plain ones, and
# two independent products keep both cores busier than one
# (benchmarks/RESULTS.md). Accelerators vmap all members.
CPU_MEMBERS_AT_ONCE = 2


# Members evaluated together on CPU: one. An evaluation's matrix products
# are already large (a batch of images times a chunk of IWAE samples), so
# batching members only swaps plain products for slower batched ones.
CPU_EVAL_MEMBERS_AT_ONCE = 1


def members_at_once(mesh, evaluation: bool = False) -> int | None:
  """How many members :func:`map_members` vmaps together on ``mesh``'s
  platform: on CPU :data:`CPU_MEMBERS_AT_ONCE` in training and
  :data:`CPU_EVAL_MEMBERS_AT_ONCE` in evaluations (``evaluation=True``);
  None (all) elsewhere."""
  if mesh.devices.flat[0].platform != "cpu":
    return None
  return CPU_EVAL_MEMBERS_AT_ONCE if evaluation else CPU_MEMBERS_AT_ONCE


def map_members(
  fn, args, num_shards: int = 1, members_at_once: int | None = None
):
  """``jax.vmap(fn)(*args)`` over the leading member axis of every leaf.

  One member on one shard: ``fn`` on that member alone, without a vmap of
  size 1 around it (a single run compiles as a plain program). With
  ``members_at_once``: a vmap over the ``num_shards`` shards (so each device
  keeps its own members, no communication) of a loop over groups of that many
  members within a shard. The same numbers either way, up to float rounding
  (batched vs plain matrix products).
  """
  size = jax.tree.leaves(args)[0].shape[0]
  if size == 1 and num_shards == 1:
    out = fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: x[None], out)
  if members_at_once is None:
    return jax.vmap(fn)(*args)

  def shard(*shard_args):
    # One at a time: a plain loop, without a vmap of size 1 in it.
    batch = None if members_at_once == 1 else members_at_once
    return jax.lax.map(lambda a: fn(*a), shard_args, batch_size=batch)

  if num_shards == 1:  # no vmap of size 1: it would batch every product
    return shard(*args)
  split = lambda x: x.reshape(num_shards, -1, *x.shape[1:])
  merge = lambda x: x.reshape(-1, *x.shape[2:])
  return jax.tree.map(merge, jax.vmap(shard)(*jax.tree.map(split, args)))


def _expand(flags: Array, like: Array) -> Array:
  return flags.reshape(flags.shape + (1,) * (like.ndim - flags.ndim))


def _settle(
  state: GroupState, new: training.TrainState, finite: Array
) -> GroupState:
  """The group's state after an epoch whose per-step flags are ``finite``
  ``[K, S]``: dead members keep their old state (a member that was dead
  before only had its key advanced, which is undone); members that died
  this epoch are marked with their first bad step (1-based)."""
  survived = finite.all(axis=1)
  died = state.alive & ~survived
  train = jax.tree.map(
    lambda a, b: jnp.where(_expand(state.alive, a), a, b), new, state.train
  )
  return GroupState(
    train=train,
    alive=state.alive & survived,
    diverged_step=jnp.where(died, new.step + 1, state.diverged_step),
  )


# --------------------------------------------------------------------------
# Training.


def group_epoch(
  graphdef: nnx.GraphDef,
  optimizer,
  state: GroupState,
  raw_train: Array,
  hparams: dict,
  *,
  batch_size: int,
  protocol: str,
  levels: int,
  num_shards: int = 1,
  members_at_once: int | None = None,
  objective: training.Objective = training.ELBO,
) -> tuple[GroupState, dict]:
  """One epoch of every member: :func:`training.train_epoch` (the guarded
  scan) mapped.

  Args:
    graphdef, optimizer: the group's static model structure and optimiser.
    state: the group's GroupState (leaves ``[K, ...]``).
    raw_train: ``[N, H, W, C]`` raw levels, shared by all members.
    hparams: dict of ``[K]`` arrays (:func:`training.hyperparameters`).
    batch_size, protocol, levels, objective: static.
    num_shards: static; the number of devices the K members are split over
      (K must be a multiple of it).
    members_at_once: static; see :func:`map_members`.

  Returns:
    The new state and per-step metrics, each ``[K, S]``. A member dead
    before the epoch does nothing (its ``finite`` is all False); one whose
    step turns non-finite keeps its last finite state and is marked dead
    with that step in ``diverged_step``.
  """

  def one(train_state, alive, hp):
    return training.train_epoch(
      graphdef,
      optimizer,
      train_state,
      raw_train,
      hp,
      batch_size=batch_size,
      protocol=protocol,
      levels=levels,
      active=alive,
      objective=objective,
    )

  new, metrics = map_members(
    one, (state.train, state.alive, hparams), num_shards, members_at_once
  )
  return _settle(state, new, metrics["finite"]), metrics


def single_epoch(
  graphdef: nnx.GraphDef,
  optimizer,
  state: GroupState,
  raw_train: Array,
  hparams: dict,
  *,
  batch_size: int,
  protocol: str,
  levels: int,
  objective: training.Objective = training.ELBO,
) -> tuple[GroupState, dict, Array]:
  """A group of ONE member's epoch with no per-step check: ``(state,
  metrics, ok)`` (:func:`training.unchecked_epoch`). Where ``ok`` is True
  the state and metrics are exactly :func:`group_epoch`'s; where it is
  False, run :func:`group_epoch` from the same start instead."""
  new, metrics, ok = training.unchecked_epoch(
    graphdef,
    optimizer,
    take(state.train, 0),
    raw_train,
    take(hparams, 0),
    batch_size=batch_size,
    protocol=protocol,
    levels=levels,
    active=state.alive[0],
    objective=objective,
  )
  # ok: alive and every step finite, so _settle would change nothing.
  expand = lambda tree: jax.tree.map(lambda x: x[None], tree)
  return state._replace(train=expand(new)), expand(metrics), ok


# The program makers below are cached on their (hashable) arguments: a graph
# def, an optimiser object (member.build hands out one per optimiser config),
# a mesh and sizes. Runs of one config in one process, and the restore of a
# finished group, reuse the compiled programs instead of tracing them again.
_CACHED_PROGRAMS = 16


@dataclasses.dataclass(frozen=True)
class Epoch:
  """A group's compiled epoch (:func:`make_epoch`): call it as
  ``epoch(state, raw_train, hparams) -> (state, metrics)``."""

  checked: Callable  # every step guarded; donates the state
  fast: Callable  # a single run's: unchecked, ``(state, metrics, ok)``
  single: bool  # whether the mesh has one device (the fast form applies)

  def __call__(self, state: GroupState, raw_train, hparams):
    if self.single and state.alive.shape[0] == 1:
      new, metrics, ok = self.fast(state, raw_train, hparams)
      if ok:  # waits for the epoch: the caller reads its metrics anyway
        return new, metrics
    return self.checked(state, raw_train, hparams)


@functools.lru_cache(maxsize=_CACHED_PROGRAMS)
def make_epoch(
  graphdef,
  optimizer,
  mesh,
  *,
  batch_size: int,
  protocol: str,
  levels: int,
  objective: training.Objective = training.ELBO,
) -> Epoch:
  """One epoch of the group on ``mesh``: ``(state, raw_train, hparams) ->
  (state, metrics)``, members sharded, data replicated; every member trains
  ``objective`` (:func:`training.loss_fn`).

  Two compiled forms. ``epoch.checked`` (:func:`group_epoch`: every step
  guarded, the state donated) is what every group runs, but one: on a
  one-device mesh a group of ONE member (a single run) runs ``epoch.fast``
  (:func:`single_epoch`: no per-step check, nothing donated) and reads its
  finiteness flag on the host; an epoch that fails it is replayed once,
  from the same start, with ``epoch.checked``. The same state and metrics
  either way, bit for bit (tests/test_training.py).
  """
  on_members, same = member_sharding(mesh), replicated(mesh)
  mapped = functools.partial(
    group_epoch,
    batch_size=batch_size,
    protocol=protocol,
    levels=levels,
    num_shards=mesh.size,
    members_at_once=members_at_once(mesh),
    objective=objective,
  )
  checked = jax.jit(
    functools.partial(mapped, graphdef, optimizer),
    in_shardings=(on_members, same, on_members),
    out_shardings=on_members,
    donate_argnums=0,
  )
  # The fast form donates nothing: a failed epoch replays from its start.
  fast = jax.jit(
    functools.partial(
      single_epoch,
      graphdef,
      optimizer,
      batch_size=batch_size,
      protocol=protocol,
      levels=levels,
      objective=objective,
    ),
    in_shardings=(on_members, same, on_members),
    out_shardings=(on_members, on_members, same),
  )
  return Epoch(checked=checked, fast=fast, single=mesh.size == 1)


# --------------------------------------------------------------------------
# Evaluation.


def model_functions(graphdef, params, sigma2):
  """(encode, log_likelihood) of one member, in the form
  :mod:`vae_jax.train.evaluation` takes."""
  model = nnx.merge(graphdef, params)

  def log_likelihood(x, z):
    logits = model.decode(z[None])
    return models.log_likelihood(model, x[None], logits, sigma2)[0]

  return model.encode, log_likelihood


@functools.lru_cache(maxsize=_CACHED_PROGRAMS)
def make_elbo_evaluator(graphdef, mesh):
  """A jitted ``(params, sigma2, key_data, images) -> {test_elbo,
  test_rate, test_distortion}``, each ``[K]``: every member's mean test ELBO
  terms (:func:`evaluation.elbo_terms`) on ``images`` (replicated), for the
  periodic evaluation during training. ``sigma2`` is ``[K]`` or None."""

  def one(params, sigma2, key_data, images):
    encode, log_likelihood = model_functions(graphdef, params, sigma2)
    t = evaluation.elbo_terms(
      encode, log_likelihood, images, jax.random.wrap_key_data(key_data)
    )
    return {f"test_{k}": jnp.mean(t[k]) for k in ("elbo", "rate", "distortion")}

  def run(params, sigma2, key_data, images):
    return map_members(
      lambda p, s, k: one(p, s, k, images),
      (params, sigma2, key_data),
      num_shards=mesh.size,
      members_at_once=members_at_once(mesh, evaluation=True),
    )

  on_members, same = member_sharding(mesh), replicated(mesh)
  return jax.jit(
    run,
    in_shardings=(on_members, on_members, on_members, same),
    out_shardings=on_members,
  )


@functools.lru_cache(maxsize=_CACHED_PROGRAMS)
def make_evaluator(
  graphdef, mesh, *, num_samples: int, chunk_size: int, batch_size: int
):
  """A jitted ``(params, sigma2, key_data, images, start) -> terms``: the
  per-example ELBO and IWAE terms of :func:`evaluation.evaluate_batch` for
  rows ``start .. start + batch_size`` of ``images``, for every member.

  ``params``, ``sigma2`` (``[K]``, or None) and ``key_data`` (``[K, 2]``
  uint32 data of each member's evaluation key) are sharded by member;
  ``images`` (the evaluation set padded to a multiple of ``batch_size``) and
  ``start`` (uint32) are replicated. Each output is ``[K, batch_size, ...]``.
  """

  def one(params, sigma2, key_data, images, start):
    encode, log_likelihood = model_functions(graphdef, params, sigma2)
    x = jax.lax.dynamic_slice_in_dim(images, start, batch_size)
    return evaluation.evaluate_batch(
      encode,
      log_likelihood,
      x,
      jax.random.wrap_key_data(key_data),
      start,
      num_samples=num_samples,
      chunk_size=chunk_size,
    )

  def run(params, sigma2, key_data, images, start):
    return map_members(
      lambda p, s, k: one(p, s, k, images, start),
      (params, sigma2, key_data),
      num_shards=mesh.size,
      members_at_once=members_at_once(mesh, evaluation=True),
    )

  on_members, same = member_sharding(mesh), replicated(mesh)
  return jax.jit(
    run,
    in_shardings=(on_members, on_members, on_members, same, same),
    out_shardings=on_members,
  )


@functools.lru_cache(maxsize=_CACHED_PROGRAMS)
def make_train_sse(graphdef, mesh, *, chunk: int):
  """A jitted ``(params, images, eps, start) -> [K, chunk]``: each member's
  squared error against its decoder's mean, summed per row, for rows
  ``start .. start + chunk`` of the training images with one reparameterised
  sample per row."""

  def one(params, images, eps, start):
    model = nnx.merge(graphdef, params)
    x = jax.lax.dynamic_slice_in_dim(images, start, chunk)
    noise = jax.lax.dynamic_slice_in_dim(eps, start, chunk)
    mean, log_variance = model.encode(x)
    z = divergences.reparameterize(mean, log_variance, noise)
    error = jnp.square(x - model.mean_image(model.decode(z)))
    return error.reshape(chunk, -1).sum(axis=1)

  def run(params, images, eps, start):
    return map_members(
      lambda p: one(p, images, eps, start),
      (params,),
      num_shards=mesh.size,
      members_at_once=members_at_once(mesh, evaluation=True),
    )

  on_members, same = member_sharding(mesh), replicated(mesh)
  return jax.jit(
    run, in_shardings=(on_members, same, same, same), out_shardings=on_members
  )


def fitted_sigma2(
  graphdef,
  mesh,
  params,
  raw_train,
  dataset: data.Dataset,
  *,
  latent_dim: int,
  eval_seed: int,
  min_sigma2: float,
  chunk: int = 500,
) -> np.ndarray:
  """Every member's sigma-VAE sigma^2 ``[K]``, fitted on the TRAINING images:
  the mean squared error of one reconstruction of each (the images made with
  ``split(key(eval_seed))``'s first key, the noise with its second; a
  float64 sum over rows), floored at ``min_sigma2``."""
  data_key, noise_key = jax.random.split(jax.random.key(eval_seed))
  images = np.asarray(
    data.to_unit_interval(data_key, raw_train, dataset.protocol, dataset.levels)
  )
  n = len(images)
  eps = np.asarray(jax.random.normal(noise_key, (n, latent_dim), jnp.float32))
  chunk = min(chunk, n)
  same = replicated(mesh)
  images_g = place(evaluation.padded_rows(images, chunk), same)
  eps_g = place(evaluation.padded_rows(eps, chunk), same)
  fn = make_train_sse(graphdef, mesh, chunk=chunk)
  rows = [
    gather(fn(params, images_g, eps_g, place(np.uint32(s), same)))
    for s in range(0, n, chunk)
  ]
  sse = np.concatenate(rows, axis=1)[:, :n].astype(np.float64)
  return np.maximum(sse.sum(axis=1) / images.size, min_sigma2)


def learned_sigma2(graphdef, params) -> np.ndarray:
  """Each member's learned sigma^2 (the mean, for per-pixel ones) ``[K]``."""
  values = gather(params)
  k = len(jax.tree.leaves(values)[0])
  return np.array(
    [
      float(np.mean(nnx.merge(graphdef, take(values, m)).learned_sigma2()))
      for m in range(k)
    ]
  )
