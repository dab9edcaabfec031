"""The rules of a run's config keys (an ml_collections ConfigDict).

Every error names the key, the value and what was expected. Keys are those of
``experiments/configs/default.py``; a config missing one or carrying an extra
one is refused. (What a resumed run may change is the workdir's contract:
:mod:`vae_jax.train.workdir`.)
"""

import math

import ml_collections

from vae_jax import decoders
from vae_jax.train import data
from vae_jax.train import models
from vae_jax.train import training


class ConfigError(ValueError):
  """A config key is missing, unknown, or has a bad value."""


def _positive_int(v):
  return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _nonneg_int(v):
  return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v):
  # Finite: inf and nan pass every comparison test below or fail it silently.
  return (
    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
  )


_OUTPUT_BIASES = ("zero", "data_mean")

_RULES = {
  "source": (
    lambda v: (
      isinstance(v, str)
      and (v in data.SOURCES or v.startswith("tfds:") and len(v) > 5)
    ),
    f"one of {data.SOURCES} or 'tfds:<name>'",
  ),
  "protocol": (lambda v: v in data.PROTOCOLS, f"one of {data.PROTOCOLS}"),
  "data_dir": (lambda v: isinstance(v, str), "a path or ''"),
  "train_examples": (_nonneg_int, "an int >= 0 (the first N; 0 = all)"),
  "architecture": (
    lambda v: v in models.ARCHITECTURES,
    f"one of {models.ARCHITECTURES}",
  ),
  "hidden_sizes": (
    lambda v: (
      isinstance(v, (tuple, list))
      and len(v) >= 1
      and all(_positive_int(h) for h in v)
    ),
    "a non-empty tuple of positive ints",
  ),
  "activation": (
    lambda v: v in models.ACTIVATIONS,
    f"one of {tuple(models.ACTIVATIONS)}",
  ),
  "latent_dim": (_positive_int, "a positive int"),
  "init": (lambda v: v in models.INITS, f"one of {models.INITS}"),
  "output_bias": (lambda v: v in _OUTPUT_BIASES, f"one of {_OUTPUT_BIASES}"),
  "encoder_variance": (
    lambda v: v in models.ENCODER_VARIANCES,
    f"one of {models.ENCODER_VARIANCES}",
  ),
  "likelihood": (lambda v: v in decoders.DECODERS, f"one of {decoders.NAMES}"),
  "sigma2_mode": (
    lambda v: v in decoders.SIGMA2_MODES,
    f"one of {decoders.SIGMA2_MODES}",
  ),
  "sigma2": (lambda v: _number(v) and v > 0, "a finite number > 0"),
  "min_sigma2": (lambda v: _number(v) and v > 0, "a finite number > 0"),
  "mixture_components": (_positive_int, "a positive int"),
  "beta": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
  "kl_warmup_epochs": (_nonneg_int, "an int >= 0"),
  "free_bits": (lambda v: _number(v) and v >= 0, "a finite number >= 0 (nats)"),
  "free_bits_mode": (
    lambda v: v in training.FREE_BITS_MODES,
    f"one of {training.FREE_BITS_MODES}",
  ),
  "objective": (
    lambda v: v in training.OBJECTIVES,
    f"one of {training.OBJECTIVES}",
  ),
  "train_samples": (_positive_int, "a positive int (samples per example)"),
  "iwae_gradient": (
    lambda v: v in training.IWAE_GRADIENTS,
    f"one of {training.IWAE_GRADIENTS}",
  ),
  "seed": (_nonneg_int, "an int >= 0"),
  "batch_size": (_positive_int, "a positive int"),
  "num_epochs": (_positive_int, "a positive int"),
  "learning_rate": (lambda v: _number(v) and v > 0, "a finite number > 0"),
  "lr_schedule": (
    lambda v: v in training.LR_SCHEDULES,
    f"one of {training.LR_SCHEDULES}",
  ),
  "adam_eps": (lambda v: _number(v) and v > 0, "a finite number > 0"),
  "adam_b1": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
  "adam_b2": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
  "adam_variant": (
    lambda v: v in training.ADAM_VARIANTS,
    f"one of {training.ADAM_VARIANTS}",
  ),
  "grad_clip": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
  "eval_every": (_positive_int, "a positive int (epochs)"),
  "nll_samples": (_positive_int, "a positive int"),
  "nll_chunk_size": (_positive_int, "a positive int"),
  "eval_batch_size": (_positive_int, "a positive int"),
  "eval_seed": (_nonneg_int, "an int >= 0"),
  "checkpoint_every": (_positive_int, "a positive int (epochs)"),
  "progress_bar": (lambda v: isinstance(v, bool), "True or False"),
}
KEYS = frozenset(_RULES)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key; returns None if all good."""
  keys = set(config.keys())
  if unknown := sorted(keys - KEYS):
    raise ConfigError(
      f"unknown config key(s) {unknown}; known keys: {sorted(KEYS)}"
    )
  if missing := sorted(KEYS - keys):
    raise ConfigError(f"config is missing key(s) {missing}")
  for key, (ok, expected) in _RULES.items():
    if not ok(config[key]):
      raise ConfigError(f"config.{key} must be {expected}, got {config[key]!r}")
  if config.min_sigma2 >= config.sigma2 and config.sigma2_mode in (
    "learned",
    "per_pixel",
  ):
    raise ConfigError(
      f"config.min_sigma2 ({config.min_sigma2}) must be below "
      f"config.sigma2 ({config.sigma2}), the starting value"
    )
  _check_decoder_fits(config)
  _check_objective(config)


def _check_decoder_fits(config: ml_collections.ConfigDict) -> None:
  # The masses on grey levels see the levels themselves, and only they do: a
  # density on undequantized levels, or a Bernoulli on them, is no likelihood.
  decoder = decoders.get(config.likelihood)
  on_levels = tuple(
    n for n, d in decoders.DECODERS.items() if d.support == "levels"
  )
  if (config.protocol == "levels") != (decoder.support == "levels"):
    raise ConfigError(
      f"config.likelihood={config.likelihood!r} does not fit "
      f"config.protocol={config.protocol!r}: protocol 'levels' is for the "
      f"masses on grey levels {on_levels}, and they need it"
    )
  if decoder.uses_sigma2 and config.sigma2_mode not in decoder.sigma2_modes:
    raise ConfigError(
      f"config.sigma2_mode={config.sigma2_mode!r} does not apply to "
      f"config.likelihood={config.likelihood!r}: one of "
      f"{decoder.sigma2_modes}"
    )


def _check_objective(config: ml_collections.ConfigDict) -> None:
  # What training.loss_fn can train, and the model options only the MLP has.
  if config.iwae_gradient == "dreg" and config.objective != "iwae":
    raise ConfigError(
      "config.iwae_gradient='dreg' needs config.objective='iwae' (the ELBO "
      f"trains with the reparameterised gradient), got {config.objective!r}"
    )
  if config.objective == "iwae" and (
    config.beta != 1 or config.free_bits != 0 or config.kl_warmup_epochs != 0
  ):
    raise ConfigError(
      "config.objective='iwae' trains the IWAE bound itself: beta must be 1, "
      "free_bits 0 and kl_warmup_epochs 0, got "
      f"beta={config.beta!r}, free_bits={config.free_bits!r}, "
      f"kl_warmup_epochs={config.kl_warmup_epochs!r}"
    )
  multi = config.objective == "iwae" or config.train_samples > 1
  if (
    multi
    and config.sigma2_mode == "optimal"
    and decoders.get(config.likelihood).uses_sigma2
  ):
    raise ConfigError(
      "config.sigma2_mode='optimal' (one sigma^2 fitted to each batch) "
      "trains the one-sample ELBO only: objective 'elbo' and "
      f"train_samples 1, got {config.objective!r} and {config.train_samples}"
    )
  if config.architecture != "mlp" and (
    config.init != "lecun" or config.output_bias != "zero"
  ):
    raise ConfigError(
      f"config.init={config.init!r} and config.output_bias="
      f"{config.output_bias!r} need config.architecture='mlp' (the conv "
      "model has the defaults 'lecun' and 'zero' only)"
    )
