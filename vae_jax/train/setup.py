"""One member, from its config: model, optimiser, state, hyperparameters, keys.

A single run and every member of a sweep are built here and nowhere else, so
a sweep member starts exactly as the single run of its config would. The
rules evaluation follows for a config (which sigma^2 the Gaussian decoder is
scored with, whether bits/dim are reported) live here too.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from flax import nnx
import jax
import ml_collections
import optax

from vae_jax import decoders
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import models
from vae_jax.train import program
from vae_jax.train import training


@dataclasses.dataclass(frozen=True)
class Member:
  """What a config builds: the model's static parts and its starting state.

  Attributes:
    graphdef: its static structure (``nnx.split``).
    optimizer: the optax transformation.
    schedule: the learning rate as a function of the step.
    state: the fresh :class:`~vae_jax.train.training.TrainState`.
    hparams: the objective's scalars (:func:`hyperparameters`).
  """

  graphdef: nnx.GraphDef
  optimizer: optax.GradientTransformation
  schedule: Callable[[Any], Any]
  state: training.TrainState
  hparams: dict


def build_model(
  config: ml_collections.ConfigDict, image_shape, key: jax.Array
) -> models.VAE:
  """The VAE the config describes, initialised from ``key``."""
  return models.VAE(
    image_shape,
    latent_dim=config.latent_dim,
    architecture=config.architecture,
    hidden_sizes=config.hidden_sizes,
    activation=config.activation,
    likelihood=config.likelihood,
    sigma2_mode=config.sigma2_mode,
    sigma2_init=config.sigma2,
    min_sigma2=config.min_sigma2,
    rngs=nnx.Rngs(params=key),
  )


def steps_per_epoch(
  config: ml_collections.ConfigDict, num_train: int, prefix: str = "config"
) -> int:
  """Optimiser steps in one epoch (full batches only).

  Raises:
    ConfigError naming ``<prefix>.batch_size`` if it exceeds ``num_train``.
  """
  steps = num_train // config.batch_size
  if steps < 1:
    raise config_lib.ConfigError(
      f"{prefix}.batch_size ({config.batch_size}) exceeds the {num_train} "
      "training examples"
    )
  return steps


def hyperparameters(config: ml_collections.ConfigDict, steps: int) -> dict:
  """The objective's scalars (:func:`training.hyperparameters`) of a config
  with ``steps`` optimiser steps per epoch."""
  return training.hyperparameters(
    beta=config.beta,
    free_bits=config.free_bits,
    warmup_steps=config.kl_warmup_epochs * steps,
    sigma2=config.sigma2,
    free_bits_mode=config.free_bits_mode,
  )


def _fresh_state(
  config: ml_collections.ConfigDict, image_shape, optimizer
) -> tuple[nnx.GraphDef, training.TrainState]:
  """The model's graph and its fresh TrainState, initialised in ONE compiled
  program: eagerly, each initialiser op is traced, lowered and compiled (or
  loaded from the cache) on its own, ~50 of them, 0.3 s of start-up. The
  same ops, so the same values (``tests/test_setup.py`` holds it bit for
  bit against the eager build)."""
  graphdefs = []

  def init(key):
    init_key, train_key = jax.random.split(key)
    graphdef, state = training.init_state(
      build_model(config, image_shape, init_key), optimizer, train_key
    )
    graphdefs.append(graphdef)  # static: recorded while tracing
    return state

  state = jax.jit(init)(jax.random.key(config.seed))
  return graphdefs[0], state


def build(config: ml_collections.ConfigDict, image_shape, steps: int) -> Member:
  """Model, optimiser, schedule, fresh state and hyperparameters of a config.

  Randomness: ``split(key(seed))`` gives the initialisation and the training
  keys; :func:`evaluation_key` is a third, independent stream.
  """
  schedule = training.learning_rate_schedule(
    config.lr_schedule,
    config.learning_rate,
    steps_per_epoch=steps,
    num_epochs=config.num_epochs,
  )
  optimizer = training.make_optimizer(
    schedule, eps=config.adam_eps, grad_clip=config.grad_clip
  )
  graphdef, state = _fresh_state(config, image_shape, optimizer)
  return Member(
    graphdef=graphdef,
    optimizer=optimizer,
    schedule=schedule,
    state=state,
    hparams=hyperparameters(config, steps),
  )


def build_group(
  configs: list[ml_collections.ConfigDict], image_shape, steps: int
) -> tuple[Member, program.GroupState, dict]:
  """Builds each member as :func:`build` does and stacks them.

  Returns:
    ``(first, state, hparams)``: the first member (its graphdef, optimiser
    and schedule are the group's), the host-side GroupState with leading
    ``[K]`` and the stacked hyperparameters, each ``[K]``.
  """
  built = [build(c, image_shape, steps) for c in configs]
  return (
    built[0],
    program.initial_state([b.state for b in built]),
    program.stack([b.hparams for b in built]),
  )


def placed_group(
  configs: list[ml_collections.ConfigDict],
  dataset: data.Dataset,
  mesh,
  steps: int,
) -> tuple[Member, program.GroupState, dict, jax.Array]:
  """:func:`build_group` on ``mesh``: the state and hyperparameters sharded
  by member (``configs`` already padded to a multiple of the mesh's size),
  and the raw training images replicated.

  Returns:
    ``(first, state, hparams, raw_train)``.
  """
  first, state, hparams = build_group(configs, dataset.image_shape, steps)
  on_members = program.member_sharding(mesh)
  return (
    first,
    program.place(state, on_members),
    program.place(hparams, on_members),
    program.place(dataset.train, program.replicated(mesh)),
  )


def evaluation_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The key of a member's test-set evaluation and figures:
  ``fold_in(key(seed), 2)``, independent of the keys :func:`build` uses."""
  return jax.random.fold_in(jax.random.key(config.seed), 2)


# How evaluation gets a Gaussian decoder's sigma^2 (see eval_sigma2_rule).
FIXED, MODEL, FITTED = "fixed", "model", "fitted"


def eval_sigma2_rule(config: ml_collections.ConfigDict) -> str | None:
  """Where the sigma^2 that scores a config's test set comes from.

  ``"fixed"``: the config's ``sigma2``. ``"model"``: the model's own learned
  sigma^2 (``learned``, ``per_pixel``). ``"fitted"`` (sigma-VAE's
  ``optimal``): the maximum-likelihood shared sigma^2 of the trained model on
  the TRAINING images, so test numbers never use test data to set it. None:
  the decoder has no sigma^2.
  """
  if not decoders.get(config.likelihood).uses_sigma2:
    return None
  return {
    "fixed": FIXED,
    "learned": MODEL,
    "per_pixel": MODEL,
    "optimal": FITTED,
  }[config.sigma2_mode]


def bits_per_dim_offset(
  config: ml_collections.ConfigDict, dataset: data.Dataset
) -> float | None:
  """Nats per dimension added to the NLL before bits/dim, or None where the
  likelihood is not a normalised one of the data
  (:func:`vae_jax.decoders.bits_per_dim_offset`)."""
  binary = config.protocol in ("dynamic", "static") or dataset.levels == 2
  return decoders.bits_per_dim_offset(
    config.likelihood, binary_data=binary, levels=dataset.levels
  )
