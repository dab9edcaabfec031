"""One member: who it is (:class:`Member`) and what its config builds (:class:`Parts`).

A member is one model of a group. A sweep's expansion makes one
:class:`Member` per model (its config, name, axis values and index); a run is
one unnamed Member. Its config builds, here and nowhere else, the model,
optimiser, schedule, fresh state and hyperparameters (:func:`build`), so a
sweep member starts exactly as the single run of its config would.
"""

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

from flax import nnx
import jax
import ml_collections
import numpy as np
import optax

from vae_jax import decoders
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import models
from vae_jax.train import training


# How many compiled initialisations and optimisers are kept (oldest dropped).
_MAX_PROGRAMS = 32


@dataclasses.dataclass(frozen=True)
class Member:
  """One model of a group, as the sweep's expansion names it.

  Attributes:
    config: its full training config (checked by ``config.validate``).
    name: its name in logs, TensorBoard and figures
      (``"beta=0.5,sigma2=0.01"``); None for a run (unnamed records).
    axes: its values on the sweep's axes (its Result's ``axes``, its
      TensorBoard hparams); empty for a run.
    index: its position in the sweep (0 for a run).
  """

  config: ml_collections.ConfigDict
  name: str | None = None
  axes: dict = dataclasses.field(default_factory=dict)
  index: int = 0


@dataclasses.dataclass(frozen=True)
class Parts:
  """What a config builds: the model's static parts and its starting state.

  Attributes:
    graphdef: its static structure (``nnx.split``).
    optimizer: the optax transformation.
    schedule: the learning rate as a function of the step.
    state: the fresh :class:`~vae_jax.train.training.TrainState`.
    hparams: the objective's scalars (:func:`hyperparameters`).
    objective: what its steps train (:func:`objective`), static.
  """

  graphdef: nnx.GraphDef
  optimizer: optax.GradientTransformation
  schedule: Callable[[Any], Any]
  state: training.TrainState
  hparams: dict
  objective: training.Objective = training.ELBO


def build_model(
  config: ml_collections.ConfigDict,
  image_shape,
  key: jax.Array,
  *,
  levels: int = data.LEVELS_MNIST,
  output_bias: np.ndarray | None = None,
) -> models.VAE:
  """The VAE the config describes for data with ``levels`` grey levels,
  initialised from ``key`` (the decoder's output bias from
  :func:`decoder_output_bias` where the config asks for it)."""
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
    levels=levels,
    mixture_components=config.mixture_components,
    init=config.init,
    output_bias=output_bias,
    encoder_variance=config.encoder_variance,
    rngs=nnx.Rngs(params=key),
  )


def load_data(config: ml_collections.ConfigDict) -> data.Dataset:
  """The config's data set (:func:`vae_jax.train.data.load`), its training
  images cut to the first ``train_examples`` (0: all of them).

  Raises:
    ConfigError naming ``train_examples`` if the source has fewer.
  """
  dataset = data.load(
    config.source, config.protocol, data_dir=config.data_dir or None
  )
  keep = config.train_examples
  if not keep:
    return dataset
  if keep > len(dataset.train):
    raise config_lib.ConfigError(
      f"config.train_examples ({keep}) exceeds the {len(dataset.train)} "
      f"training images of {config.source!r}"
    )
  return dataclasses.replace(dataset, train=dataset.train[:keep])


# Burda et al.'s code clips the mean training pixel to this before its logit.
_MEAN_CLIP = 1e-3


def decoder_output_bias(
  config: ml_collections.ConfigDict, dataset: data.Dataset
) -> np.ndarray | None:
  """The decoder's starting output bias the config asks for: None
  (``output_bias="zero"``) or, for ``"data_mean"``, the logit of each
  pixel's mean over the training images, raw / (levels - 1), clipped to
  [0.001, 0.999] (Burda et al. 2016's code), float32 ``[H, W, C]``."""
  if config.output_bias == "zero":
    return None
  mean = dataset.train.mean(axis=0, dtype=np.float64) / (dataset.levels - 1)
  p = np.clip(mean, _MEAN_CLIP, 1 - _MEAN_CLIP)
  return np.log(p / (1 - p)).astype(np.float32)


def objective(config: ml_collections.ConfigDict) -> training.Objective:
  """What the config's steps train: its ``objective``, ``train_samples``
  and ``iwae_gradient``."""
  return training.Objective(
    config.objective, config.train_samples, config.iwae_gradient
  )


def steps_per_epoch(config: ml_collections.ConfigDict, num_train: int) -> int:
  """Optimiser steps in one epoch (full batches only).

  Raises:
    ConfigError naming ``batch_size`` if it exceeds ``num_train``.
  """
  steps = num_train // config.batch_size
  if steps < 1:
    raise config_lib.ConfigError(
      f"batch_size ({config.batch_size}) exceeds the {num_train} training "
      "examples"
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


# Optimisers by their keys: one object for equal configs, so the programs
# built from it (program.make_epoch's cache) are reused, not recompiled.
_OPTIMIZER_KEYS = (
  "lr_schedule",
  "learning_rate",
  "num_epochs",
  "adam_eps",
  "grad_clip",
  "adam_b1",
  "adam_b2",
  "adam_variant",
  "batch_size",
)
_OPTIMIZERS: dict[str, tuple[Callable, optax.GradientTransformation]] = {}


def _optimizer_values(config: ml_collections.ConfigDict) -> list:
  """The config's optimiser keys, ``num_epochs`` only where the schedule
  reads it (cosine decays over the whole run)."""
  values = [config[k] for k in _OPTIMIZER_KEYS]
  if config.lr_schedule != "cosine":
    values[_OPTIMIZER_KEYS.index("num_epochs")] = None
  return values


def _optimizer(
  config: ml_collections.ConfigDict, steps: int
) -> tuple[Callable, optax.GradientTransformation]:
  """The config's learning-rate schedule and optimiser; the same objects for
  configs with equal optimiser keys and ``steps``."""
  signature = json.dumps([_optimizer_values(config), steps], default=repr)
  if signature not in _OPTIMIZERS:
    schedule = training.learning_rate_schedule(
      config.lr_schedule,
      config.learning_rate,
      steps_per_epoch=steps,
      num_epochs=config.num_epochs,
    )
    optimizer = training.make_optimizer(
      schedule,
      eps=config.adam_eps,
      grad_clip=config.grad_clip,
      b1=config.adam_b1,
      b2=config.adam_b2,
      variant=config.adam_variant,
      batch_size=config.batch_size,
    )
    if len(_OPTIMIZERS) >= _MAX_PROGRAMS:
      del _OPTIMIZERS[next(iter(_OPTIMIZERS))]
    _OPTIMIZERS[signature] = (schedule, optimizer)
  return _OPTIMIZERS[signature]


# What the initialisation program reads of a config: the model's keys and
# (below, with steps) the optimiser's, which give its state's structure.
# Everything but the seed, which is the program's argument.
_INIT_KEYS = (
  "latent_dim",
  "architecture",
  "hidden_sizes",
  "activation",
  "likelihood",
  "sigma2_mode",
  "sigma2",
  "min_sigma2",
  "mixture_components",
  "init",
  "encoder_variance",
)
# Compiled initialisations by that signature, so the members of a group (who
# differ by seed, beta, ...) and the runs of one config in one process
# compile theirs once. Bounded: the oldest is dropped past this many.
_INIT_PROGRAMS: dict[str, tuple[Callable, list]] = {}


def _init_signature(config, image_shape, steps, levels, bias) -> str:
  model = [config[k] for k in _INIT_KEYS] + _optimizer_values(config)
  if config.sigma2_mode not in ("learned", "per_pixel"):
    # Only a learned sigma^2 starts at it: the fixed and optimal modes'
    # members (a sweep over sigma2) share one initialisation.
    model[_INIT_KEYS.index("sigma2")] = None
  data_side = [list(image_shape), steps, levels]
  if bias is not None:
    data_side.append(
      hashlib.sha256(np.ascontiguousarray(bias).tobytes()).hexdigest()
    )
  return json.dumps([model, data_side], default=repr)


def _fresh_state(
  config: ml_collections.ConfigDict,
  image_shape,
  optimizer,
  steps: int,
  levels: int,
  bias: np.ndarray | None = None,
) -> tuple[nnx.GraphDef, training.TrainState]:
  """The model's graph and its fresh TrainState, initialised in ONE compiled
  program rather than op by op (eagerly, each of Flax's initialisers is
  compiled on its own), compiled once per :data:`_INIT_KEYS` signature. The
  same ops, so the same values (``tests/test_member.py`` holds it bit for bit
  against the eager build)."""
  signature = _init_signature(config, image_shape, steps, levels, bias)
  if signature not in _INIT_PROGRAMS:
    graphdefs: list = []

    def init(key):
      init_key, train_key = jax.random.split(key)
      graphdef, state = training.init_state(
        build_model(
          config, image_shape, init_key, levels=levels, output_bias=bias
        ),
        optimizer,
        train_key,
      )
      graphdefs.append(graphdef)  # static: recorded while tracing
      return state

    if len(_INIT_PROGRAMS) >= _MAX_PROGRAMS:
      del _INIT_PROGRAMS[next(iter(_INIT_PROGRAMS))]
    _INIT_PROGRAMS[signature] = (jax.jit(init), graphdefs)
  program, graphdefs = _INIT_PROGRAMS[signature]
  state = program(jax.random.key(config.seed))
  return graphdefs[0], state


def build(
  config: ml_collections.ConfigDict,
  image_shape,
  steps: int,
  *,
  levels: int = data.LEVELS_MNIST,
  output_bias: np.ndarray | None = None,
) -> Parts:
  """Model, optimiser, schedule, fresh state and hyperparameters of a config
  on data with ``levels`` grey levels (and the decoder's starting
  ``output_bias``, :func:`decoder_output_bias`, where the config asks for one).

  Randomness: ``split(key(seed))`` gives the initialisation and the training
  keys; :func:`evaluation_key` is a third, independent stream.
  """
  schedule, optimizer = _optimizer(config, steps)
  if config.output_bias != "zero" and output_bias is None:
    raise ValueError(
      f"output_bias={config.output_bias!r} needs the bias: pass "
      "output_bias=member.decoder_output_bias(config, dataset)"
    )
  graphdef, state = _fresh_state(
    config, image_shape, optimizer, steps, levels, output_bias
  )
  return Parts(
    graphdef=graphdef,
    optimizer=optimizer,
    schedule=schedule,
    state=state,
    hparams=hyperparameters(config, steps),
    objective=objective(config),
  )


def evaluation_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The key of a member's test-set evaluation and figures:
  ``fold_in(key(seed), 2)``, independent of the keys :func:`build` uses."""
  return jax.random.fold_in(jax.random.key(config.seed), 2)


def bits_per_dim_offset(
  config: ml_collections.ConfigDict, dataset: data.Dataset
) -> float | None:
  """Nats per dimension added to the NLL before bits/dim, or None where the
  likelihood is not a normalised one of the data
  (:func:`vae_jax.decoders.bits_per_dim_offset`): the protocol says what the
  likelihood sees (data that are binary already are binary, unless fed as
  levels)."""
  if config.protocol == "levels":
    seen = "levels"
  elif config.protocol in ("dynamic", "static") or dataset.levels == 2:
    seen = "binary"
  else:
    seen = "dequantized"
  return decoders.bits_per_dim_offset(
    config.likelihood, data=seen, levels=dataset.levels
  )


def uses_sigma2(config: ml_collections.ConfigDict) -> bool:
  """Whether the config's decoder has a variance (the sigma^2 modes apply)."""
  return decoders.get(config.likelihood).uses_sigma2
