"""Many VAEs as one program: the members of a sweep on a leading axis.

A sweep trains K members that differ only in numbers the program does not
depend on structurally (:data:`VMAPPED`: beta, sigma^2, free bits, warm-up,
seed). Their TrainStates are stacked on a leading axis of size K, their
hyperparameters are a dict of ``[K]`` arrays, and one epoch of all of them is
``jax.vmap(training.train_epoch)`` inside one ``jax.jit`` (on CPU, vmapped two
at a time in a loop inside the program, see :func:`members_at_once`): each
member draws its own data order, binarization and noise from its own key and
keeps its own optimiser state, while the raw training images are one shared
array. Members that need different programs (likelihood, architecture,
widths, learning rate, ...) form separate groups (:func:`groups`), each one
program.

The sweep axis is sharded over a one-axis device mesh named ``"sweep"``
(:func:`make_mesh`): every device, of every process under
``jax.distributed``, holds K / num_devices whole members, so training needs no
communication between devices. K is padded to a multiple of the device count
with copies of the group's first member (:func:`padded_size`); the copies are
dropped from every result.

A member whose loss or update turns non-finite is frozen at its last finite
state and marked dead in :class:`SweepState`; the others go on.
"""

import itertools
import json
from typing import Any, NamedTuple

from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import checkpoints
from vae_jax import config as config_lib
from vae_jax import data
from vae_jax import evaluation
from vae_jax import experiment
from vae_jax import training

Array = jax.Array
AXIS = "sweep"
# Config keys that only change numbers inside one program: members that
# differ in these alone share a group.
VMAPPED = ("beta", "sigma2", "free_bits", "kl_warmup_epochs", "seed")
MODES = ("grid", "zip")
SWEEP_KEYS = frozenset({"base", "axes", "mode"})


class SweepState(NamedTuple):
  """The state of a group of K members; every leaf has a leading ``[K]``."""
  train: training.TrainState
  alive: Array           # bool [K]: False once a step was non-finite
  diverged_step: Array   # int32 [K]: that step (1-based), 0 if none


# --------------------------------------------------------------------------
# Members and groups.

def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a sweep config: ``base`` (a full training config), ``axes``
  (config key -> non-empty tuple of values) and ``mode`` (grid | zip).

  Raises:
    ConfigError naming the key and the problem; each member's training
    config is checked as well (:func:`vae_jax.config.validate`).
  """
  keys = set(config.keys())
  if keys != SWEEP_KEYS:
    raise config_lib.ConfigError(
        f"a sweep config has exactly the keys {sorted(SWEEP_KEYS)}; got "
        f"unknown {sorted(keys - SWEEP_KEYS)}, missing "
        f"{sorted(SWEEP_KEYS - keys)}")
  if config.mode not in MODES:
    raise config_lib.ConfigError(
        f"config.mode must be one of {MODES}, got {config.mode!r}")
  for key, values in config.axes.items():
    if key not in config_lib.KEYS:
      raise config_lib.ConfigError(
          f"config.axes.{key} is not a training config key; known keys: "
          f"{sorted(config_lib.KEYS)}")
    if not isinstance(values, (tuple, list)) or not values:
      raise config_lib.ConfigError(
          f"config.axes.{key} must be a non-empty tuple of values, got "
          f"{values!r}")
  if config.mode == "zip":
    lengths = {k: len(v) for k, v in config.axes.items()}
    if len(set(lengths.values()) - {1}) > 1:
      raise config_lib.ConfigError(
          f"mode 'zip' needs the axes to have one common length (or 1); got "
          f"{lengths}")
  config_lib.validate(config.base)
  for i, member in enumerate(members(config)):
    try:
      config_lib.validate(member)
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(
          f"sweep member {i} ({describe(member, config)}): {e}") from None


def members(config: ml_collections.ConfigDict
            ) -> list[ml_collections.ConfigDict]:
  """The training configs of a sweep, in a fixed order.

  ``grid``: every combination of the axes, taken in alphabetical order (as
  a ConfigDict lists its keys; the last varies fastest);
  ``zip``: the i-th value of every axis (length-1 axes broadcast). sigma2
  only matters to a Gaussian decoder, so members with another likelihood
  keep the base sigma2 and duplicates are removed.
  """
  names = list(config.axes.keys())
  values = [tuple(config.axes[k]) for k in names]
  if config.mode == "grid":
    combos = list(itertools.product(*values))
  else:
    n = max((len(v) for v in values), default=1)
    combos = [tuple(v[i] if len(v) > 1 else v[0] for v in values)
              for i in range(n)]
  out, seen = [], set()
  for combo in combos or [()]:
    member = ml_collections.ConfigDict(config.base.to_dict())
    for name, value in zip(names, combo):
      member[name] = value
    if member.likelihood != "gaussian":
      member.sigma2 = config.base.sigma2
    fingerprint = repr(sorted(member.to_dict().items()))
    if fingerprint not in seen:
      seen.add(fingerprint)
      out.append(member)
  return out


def resume_conflicts(saved: dict, config: dict) -> list[str]:
  """What a resumed sweep may not change: its axes, its mode, and the base
  keys :func:`vae_jax.config.resume_conflicts` guards (as ``"base.<key>"``)."""
  keys = [k for k in ("axes", "mode")
          if _canonical(saved.get(k)) != _canonical(config.get(k))]
  return keys + [f"base.{k}" for k in config_lib.resume_conflicts(
      saved.get("base", {}), config.get("base", {}))]


def _canonical(value) -> str:
  # Tuples and lists compare equal, as they do after a JSON round trip.
  return json.dumps(value, sort_keys=True)


def describe(member: ml_collections.ConfigDict,
             config: ml_collections.ConfigDict) -> str:
  """``"beta=1, sigma2=0.1"``: a member's values on the sweep's axes."""
  return ", ".join(f"{k}={member[k]}" for k in config.axes.keys())


def groups(member_configs: list) -> list[list[int]]:
  """Indices of the members that can share one program, in first-seen
  order: members whose configs agree on every key outside :data:`VMAPPED`."""
  found: dict[str, list[int]] = {}
  for i, member in enumerate(member_configs):
    shared = {k: v for k, v in member.to_dict().items() if k not in VMAPPED}
    found.setdefault(repr(sorted(shared.items())), []).append(i)
  return list(found.values())


# --------------------------------------------------------------------------
# Devices.

def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A one-axis mesh named ``"sweep"`` over ``devices`` (default: all
  devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


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
    if checkpoints.is_prng_key(leaf):
      return jax.random.wrap_key_data(place(jax.random.key_data(leaf),
                                            sharding))
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: host[index])
  return jax.tree.map(one, tree)


def gather(tree):
  """Global arrays -> NumPy arrays of their full values, on every process
  (a collective under ``jax.distributed``: all processes must call it)."""
  def one(leaf):
    if checkpoints.is_prng_key(leaf):
      leaf = jax.random.key_data(leaf)
    if leaf.is_fully_addressable:
      return np.asarray(leaf)
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return jax.tree.map(one, tree)


def stack(trees: list) -> Any:
  """Stacks per-member pytrees (typed keys included) on a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def initial_sweep_state(member_configs: list, image_shape, steps_per_epoch: int
                        ) -> tuple[Any, Any, SweepState, dict]:
  """Builds each member exactly as a single run of its config would
  (:func:`vae_jax.experiment.initial_state`) and stacks them.

  Returns:
    ``(graphdef, optimizer, state, hparams)``: the group's shared static
    parts, a host-side SweepState with leading ``[K]`` and the stacked
    hyperparameters, each ``[K]``.
  """
  built = [experiment.initial_state(c, image_shape, steps_per_epoch)
           for c in member_configs]
  _, graphdef, optimizer, _, _ = built[0]
  k = len(member_configs)
  state = SweepState(train=stack([b[-1] for b in built]),
                     alive=jnp.ones(k, jnp.bool_),
                     diverged_step=jnp.zeros(k, jnp.int32))
  hparams = stack([experiment.config_hyperparameters(c, steps_per_epoch)
                   for c in member_configs])
  return graphdef, optimizer, state, hparams


# --------------------------------------------------------------------------
# Training and evaluation, vmapped over members.

# Members vmapped together on CPU: measured on 2 cores (8 Gaussian members,
# mnist5k), 2 at a time (a loop over pairs inside the program) trained 31k
# examples/s against 26k for all 8 vmapped and 26k for 1 at a time: XLA:CPU's
# batched matrix products are slower than plain ones, and two independent
# products keep both cores busier than one. Accelerators vmap all members.
CPU_MEMBERS_AT_ONCE = 2


def members_at_once(mesh) -> int | None:
  """How many members :func:`sweep_epoch` vmaps together on ``mesh``'s
  platform: :data:`CPU_MEMBERS_AT_ONCE` on CPU, None (all) elsewhere."""
  platform = mesh.devices.flat[0].platform
  return CPU_MEMBERS_AT_ONCE if platform == "cpu" else None


def sweep_epoch(graphdef: nnx.GraphDef, optimizer, state: SweepState,
                raw_train: Array, hparams: dict, *, batch_size: int,
                protocol: str, levels: int, num_shards: int = 1,
                members_at_once: int | None = None
                ) -> tuple[SweepState, dict]:
  """One epoch of every member: :func:`training.train_epoch` vmapped.

  Args:
    graphdef, optimizer: the group's static model structure and optimiser.
    state: the group's SweepState (leaves ``[K, ...]``).
    raw_train: ``[N, H, W, C]`` raw levels, shared by all members.
    hparams: dict of ``[K]`` arrays (:func:`training.hyperparameters`).
    batch_size, protocol, levels: static.
    num_shards: static; the number of devices the K members are split over
      (K must be a multiple of it).
    members_at_once: static; None vmaps all members at once; n vmaps n of a
      shard's members at a time and loops over those groups inside the
      program (``jax.lax.map``). The same numbers either way, up to float
      rounding (batched vs plain matrix products).

  Returns:
    The new state and per-step metrics, each ``[K, S]``. A member dead
    before the epoch does nothing (its ``finite`` is all False); one whose
    step turns non-finite keeps its last finite state and is marked dead
    with that step in ``diverged_step``.
  """
  def member(train_state, alive, hp):
    return training.train_epoch(graphdef, optimizer, train_state, raw_train,
                                hp, batch_size=batch_size, protocol=protocol,
                                levels=levels, active=alive)

  new, metrics = _map_members(member, (state.train, state.alive, hparams),
                              num_shards, members_at_once)
  survived = metrics["finite"].all(axis=1)
  died = state.alive & ~survived
  # train_epoch already froze a member at its first bad step; a member that
  # was dead before only had its key advanced, which we undo.
  train = jax.tree.map(
      lambda a, b: jnp.where(_expand(state.alive, a), a, b), new, state.train)
  return SweepState(
      train=train, alive=state.alive & survived,
      diverged_step=jnp.where(died, new.step + 1, state.diverged_step)
  ), metrics


def _map_members(fn, args, num_shards: int, members_at_once: int | None):
  """``jax.vmap(fn)(*args)`` over the leading [K] axis, or, with
  ``members_at_once``, a vmap over the ``num_shards`` shards (so each device
  keeps its own members, no communication) of a loop over groups of that many
  members within a shard."""
  if members_at_once is None:
    return jax.vmap(fn)(*args)

  def shard(*shard_args):
    return jax.lax.map(lambda a: fn(*a), shard_args,
                       batch_size=members_at_once)
  if num_shards == 1:  # no vmap of size 1 around it: that batches every
    return shard(*args)  # matrix product twice over and costs ~20% on CPU
  split = lambda x: x.reshape(num_shards, -1, *x.shape[1:])
  merge = lambda x: x.reshape(-1, *x.shape[2:])
  return jax.tree.map(merge, jax.vmap(shard)(*jax.tree.map(split, args)))


def _expand(flags: Array, like: Array) -> Array:
  return flags.reshape(flags.shape + (1,) * (like.ndim - flags.ndim))


def make_sweep_epoch(graphdef, optimizer, mesh, *, batch_size: int,
                     protocol: str, levels: int):
  """:func:`sweep_epoch` jitted with members sharded over ``mesh``, the data
  replicated and :func:`members_at_once` for the mesh's platform:
  ``(state, raw_train, hparams) -> (state, metrics)``. The state's buffers
  are donated."""
  def epoch(state, raw_train, hparams):
    return sweep_epoch(graphdef, optimizer, state, raw_train, hparams,
                       batch_size=batch_size, protocol=protocol, levels=levels,
                       num_shards=mesh.size,
                       members_at_once=members_at_once(mesh))
  on_members = member_sharding(mesh)
  return jax.jit(epoch, in_shardings=(on_members, replicated(mesh), on_members),
                 out_shardings=on_members, donate_argnums=0)


def make_evaluator(graphdef, mesh, *, num_samples: int, chunk_size: int,
                   batch_size: int):
  """A jitted ``(params, sigma2, key_data, images, start) -> terms``: the
  per-example ELBO and IWAE terms of :func:`evaluation.evaluate_batch` for
  rows ``start .. start + batch_size`` of ``images``, for every member.

  ``params``, ``sigma2`` (``[K]``, or None) and ``key_data`` (``[K, 2]``
  uint32 data of each member's evaluation key) are sharded by member;
  ``images`` (the evaluation set padded to a multiple of ``batch_size``) and
  ``start`` (uint32) are replicated. Each output is ``[K, batch_size, ...]``.
  """
  def one(params, sigma2, key_data, images, start):
    encode, log_likelihood = experiment.model_functions(graphdef, params,
                                                        sigma2)
    x = jax.lax.dynamic_slice_in_dim(images, start, batch_size)
    return evaluation.evaluate_batch(
        encode, log_likelihood, x, jax.random.wrap_key_data(key_data), start,
        num_samples=num_samples, chunk_size=chunk_size)

  on_members, same = member_sharding(mesh), replicated(mesh)
  return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None)),
                 in_shardings=(on_members, on_members, on_members, same, same),
                 out_shardings=on_members)


def make_train_sse(graphdef, mesh, *, chunk: int):
  """A jitted ``(params, images, eps, start) -> [K, chunk]``: each member's
  squared error, summed per row, for rows ``start .. start + chunk`` of the
  training images with one reparameterised sample
  ``z = mean + exp(log_var / 2) * eps`` (as :func:`models.reparameterize`)."""
  def one(params, images, eps, start):
    model = nnx.merge(graphdef, params)
    x = jax.lax.dynamic_slice_in_dim(images, start, chunk)
    noise = jax.lax.dynamic_slice_in_dim(eps, start, chunk)
    mean, log_variance = model.encode(x)
    z = mean + jnp.exp(0.5 * log_variance) * noise
    error = jnp.square(x - jax.nn.sigmoid(model.decode(z)))
    return error.reshape(chunk, -1).sum(axis=1)

  on_members, same = member_sharding(mesh), replicated(mesh)
  return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)),
                 in_shardings=(on_members, same, same, same),
                 out_shardings=on_members)


def fitted_sigma2(graphdef, mesh, params, raw_train, dataset: data.Dataset, *,
                  latent_dim: int, eval_seed: int, min_sigma2: float,
                  chunk: int = 500) -> np.ndarray:
  """Every member's sigma-VAE sigma^2 ``[K]``, fitted on the TRAINING images:
  the quantity of :func:`vae_jax.experiment.eval_sigma2` (same images, same
  noise, a float64 sum over rows), floored at ``min_sigma2``."""
  data_key, noise_key = jax.random.split(jax.random.key(eval_seed))
  images = np.asarray(data.to_unit_interval(
      data_key, raw_train, dataset.protocol, dataset.levels))
  n = len(images)
  eps = np.asarray(jax.random.normal(noise_key, (n, latent_dim), jnp.float32))
  chunk = min(chunk, n)
  same = replicated(mesh)
  images_g = place(evaluation.padded_rows(images, chunk), same)
  eps_g = place(evaluation.padded_rows(eps, chunk), same)
  fn = make_train_sse(graphdef, mesh, chunk=chunk)
  rows = [gather(fn(params, images_g, eps_g, place(np.uint32(s), same)))
          for s in range(0, n, chunk)]
  sse = np.concatenate(rows, axis=1)[:, :n].astype(np.float64)
  return np.maximum(sse.sum(axis=1) / images.size, min_sigma2)
