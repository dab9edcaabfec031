"""Checks a run's config (an ml_collections ConfigDict) before anything runs.

Every error names the key, the value and what was expected. Keys are those of
``experiments/configs/default.py``; a config missing one or carrying an extra
one is refused.
"""

from collections.abc import Callable
import json
import math
import os

import ml_collections

from vae_jax import decoders
from vae_jax.train import data
from vae_jax.train import models
from vae_jax.train import training

# Keys a resumed run may change: they do not touch the training trajectory.
RESUMABLE_CHANGES = frozenset(
  {
    "num_epochs",
    "eval_every",
    "nll_samples",
    "nll_chunk_size",
    "eval_batch_size",
    "checkpoint_every",
    "progress_bar",
    "scan_epoch",
  }
)


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
  "likelihood": (lambda v: v in decoders.DECODERS, f"one of {decoders.NAMES}"),
  "sigma2_mode": (
    lambda v: v in decoders.SIGMA2_MODES,
    f"one of {decoders.SIGMA2_MODES}",
  ),
  "sigma2": (lambda v: _number(v) and v > 0, "a finite number > 0"),
  "min_sigma2": (lambda v: _number(v) and v > 0, "a finite number > 0"),
  "beta": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
  "kl_warmup_epochs": (_nonneg_int, "an int >= 0"),
  "free_bits": (lambda v: _number(v) and v >= 0, "a finite number >= 0 (nats)"),
  "free_bits_mode": (
    lambda v: v in training.FREE_BITS_MODES,
    f"one of {training.FREE_BITS_MODES}",
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
  "grad_clip": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
  "scan_epoch": (lambda v: isinstance(v, bool), "True or False"),
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


# Why a key that is otherwise free to change on resume is not, here.
_SCHEDULE_DEPENDS = (
  "the cosine schedule decays the learning rate to 0 over num_epochs, so "
  "changing it changes every step already taken"
)


def resume_conflicts(saved: dict, config: dict) -> list[str]:
  """Keys whose values differ between a saved run and this one and would
  change its trajectory up to the checkpoint: resuming with these is refused.

  ``num_epochs`` may change (the run trains on, or stops), except under
  ``lr_schedule='cosine'``, whose rate at every step depends on it. The
  ``burda`` schedule's boundaries are fixed epochs (3^i), independent of
  ``num_epochs``.
  """
  keys = (set(saved) | set(config)) - RESUMABLE_CHANGES
  if config.get("lr_schedule") == "cosine":
    keys.add("num_epochs")
  return sorted(
    k for k in keys if _plain(saved.get(k)) != _plain(config.get(k))
  )


def _plain(v):
  return list(v) if isinstance(v, tuple) else v


def _reason(key: str) -> str:
  return f" ({_SCHEDULE_DEPENDS})" if key.endswith("num_epochs") else ""


def has_checkpoints(workdir: str) -> bool:
  """Whether training ever saved anything under ``workdir``: a checkpoint of
  a run (``checkpoints/<epoch>``) or of a sweep's group
  (``groups/<g>/checkpoints/<epoch>``, or its ``results.json``)."""
  folders = [os.path.join(workdir, "checkpoints")]
  groups = os.path.join(workdir, "groups")
  if os.path.isdir(groups):
    for g in os.listdir(groups):
      if os.path.exists(os.path.join(groups, g, "results.json")):
        return True
      folders.append(os.path.join(groups, g, "checkpoints"))
  return any(os.path.isdir(f) and os.listdir(f) for f in folders)


def check_resumable(
  workdir: str,
  config: dict,
  conflicts: Callable[[dict, dict], list[str]] = resume_conflicts,
  what: str = "run",
) -> None:
  """Refuses to resume ``workdir`` if its ``config.json`` differs from
  ``config`` in keys that ``conflicts(saved, config)`` names (dotted paths
  such as ``"base.beta"`` for nested configs).

  A workdir with a config but no checkpoint is not a run yet (it stopped
  before its first save): any config may start there, and a line says the
  old config.json is replaced.

  Raises:
    ConfigError naming each key with its saved and its new value.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except ValueError:
    saved = None
  if not has_checkpoints(workdir):
    if saved != json.loads(json.dumps(config)):
      print(
        f"note: {workdir} holds a config but no checkpoint (a {what} that "
        "stopped before its first save); starting this one there, replacing "
        "its config.json",
        flush=True,
      )
    return
  if saved is None:
    raise ConfigError(
      f"{path} is not valid JSON; restore it or use a new workdir"
    )
  if keys := conflicts(saved, config):
    details = ", ".join(
      f"{k}: saved {_lookup(saved, k)!r}, now {_lookup(config, k)!r}"
      f"{_reason(k)}"
      for k in keys
    )
    raise ConfigError(
      f"{workdir} holds a {what} with a different config ({details}); "
      "resume with the same values or use a new workdir"
    )


def _lookup(tree: dict, dotted: str):
  for part in dotted.split("."):
    tree = tree.get(part) if isinstance(tree, dict) else None
  return tree
