"""A sweep as data: its config, its members and the groups that share a program.

This is where a sweep's members are made (:func:`members`): one
:class:`~vae_jax.train.member.Member` per model, with its config, name, axis
values and index; nothing else names or numbers them.

A sweep config has three keys and one switch: ``base`` (a full training
config), ``axes`` (training key -> tuple of values), ``mode`` (``grid``: every
combination; ``zip``: the i-th values together) and ``member_figures``
(whether each member gets the figures of a single run). Members that differ
only in :data:`VMAPPED` keys share one compiled program (a group); any other
difference starts a new group.
"""

import itertools
import json
import math

import ml_collections

from vae_jax import decoders
from vae_jax.train import config as config_lib
from vae_jax.train import member as member_lib
from vae_jax.train import workdir as workdir_lib

# Config keys that only change numbers inside one program: members that
# differ in these alone share a group.
VMAPPED = (
  "beta",
  "sigma2",
  "free_bits",
  "free_bits_mode",
  "kl_warmup_epochs",
  "seed",
)
MODES = ("grid", "zip")
SWEEP_KEYS = frozenset({"base", "axes", "mode", "member_figures"})


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a sweep config: ``base`` (a full training config), ``axes``
  (config key -> non-empty tuple of values), ``mode`` (grid | zip) and
  ``member_figures`` (a bool).

  Raises:
    ConfigError naming the key and the problem; each member's training
    config is checked as well (:func:`vae_jax.config.validate`).
  """
  keys = set(config.keys())
  if keys != SWEEP_KEYS:
    raise config_lib.ConfigError(
      f"a sweep config has exactly the keys {sorted(SWEEP_KEYS)}; got "
      f"unknown {sorted(keys - SWEEP_KEYS)}, missing "
      f"{sorted(SWEEP_KEYS - keys)}"
    )
  if not isinstance(config.member_figures, bool):
    raise config_lib.ConfigError(
      f"config.member_figures must be True or False, got "
      f"{config.member_figures!r}"
    )
  if config.mode not in MODES:
    raise config_lib.ConfigError(
      f"config.mode must be one of {MODES}, got {config.mode!r}"
    )
  for key, values in config.axes.items():
    if key not in config_lib.KEYS:
      raise config_lib.ConfigError(
        f"config.axes.{key} is not a training config key; known keys: "
        f"{sorted(config_lib.KEYS)}"
      )
    if not isinstance(values, (tuple, list)) or not values:
      raise config_lib.ConfigError(
        f"config.axes.{key} must be a non-empty tuple of values, got {values!r}"
      )
    for value in values:
      _check_axis_value(config.base, key, value)
  if config.mode == "zip":
    lengths = {k: len(v) for k, v in config.axes.items()}
    if len(set(lengths.values()) - {1}) > 1:
      raise config_lib.ConfigError(
        f"mode 'zip' needs the axes to have one common length (or 1); got "
        f"{lengths}"
      )
  config_lib.validate(config.base)
  for member in members(config):
    try:
      config_lib.validate(member.config)
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(
        f"sweep member {member.index} ({describe(member.config, config)}): {e}"
      ) from None


def members(config: ml_collections.ConfigDict) -> list[member_lib.Member]:
  """The members of a sweep, in a fixed order, each with its training
  config, name (:func:`name`), axis values and index.

  ``grid``: every combination of the axes, taken in alphabetical order (as
  a ConfigDict lists its keys; the last varies fastest);
  ``zip``: the i-th value of every axis (length-1 axes broadcast). sigma2
  only matters to a decoder with a scale (the Gaussian, the Laplace), so
  members with another likelihood keep the base sigma2 and duplicates are
  removed.
  """
  keys = list(config.axes.keys())
  values = [tuple(config.axes[k]) for k in keys]
  if config.mode == "grid":
    combos = list(itertools.product(*values))
  else:
    n = max((len(v) for v in values), default=1)
    combos = [
      tuple(v[i] if len(v) > 1 else v[0] for v in values) for i in range(n)
    ]
  out: list[member_lib.Member] = []
  seen: set[str] = set()
  for combo in combos or [()]:
    member = ml_collections.ConfigDict(config.base.to_dict())
    for key, value in zip(keys, combo):
      member[key] = value
    decoder = decoders.DECODERS.get(member.likelihood)  # checked later
    if decoder is None or not decoder.uses_sigma2:
      member.sigma2 = config.base.sigma2
    fingerprint = repr(sorted(member.to_dict().items()))
    if fingerprint not in seen:
      seen.add(fingerprint)
      out.append(
        member_lib.Member(
          config=member,
          name=name(member, config),
          axes=axis_values(member, config),
          index=len(out),
        )
      )
  return out


def resume_conflicts(saved: dict, config: dict) -> list[str]:
  """What a resumed sweep may not change: its axes, its mode, and the base
  keys :func:`vae_jax.train.workdir.resume_conflicts` guards (as
  ``"base.<key>"``)."""
  keys = [
    k
    for k in ("axes", "mode")
    if _canonical(saved.get(k)) != _canonical(config.get(k))
  ]
  return keys + [
    f"base.{k}"
    for k in workdir_lib.resume_conflicts(
      saved.get("base", {}), config.get("base", {})
    )
  ]


def _canonical(value) -> str:
  # Tuples and lists compare equal, as they do after a JSON round trip.
  return json.dumps(value, sort_keys=True)


def describe(
  member: ml_collections.ConfigDict, config: ml_collections.ConfigDict
) -> str:
  """``"beta=1, sigma2=0.1"``: a member's values on the sweep's axes."""
  return ", ".join(f"{k}={member[k]}" for k in config.axes.keys())


def name(
  member: ml_collections.ConfigDict, config: ml_collections.ConfigDict
) -> str:
  """``"beta=1,sigma2=0.1"``: a member's name in logs, TensorBoard and
  figure folders (its values on the axes that vary, in the axes' order)."""
  varying = [k for k, v in config.axes.items() if len(v) > 1] or list(
    config.axes.keys()
  )
  return ",".join(f"{k}={_plain(member[k])}" for k in varying)


def axis_values(
  member: ml_collections.ConfigDict, config: ml_collections.ConfigDict
) -> dict:
  """A member's values on every axis of the sweep (JSON-ready)."""
  return {k: _plain(member[k]) for k in config.axes.keys()}


def _plain(value):
  return list(value) if isinstance(value, tuple) else value


def groups(
  sweep_members: list[member_lib.Member],
) -> list[list[member_lib.Member]]:
  """The members that can share one program, in first-seen order: members
  whose configs agree on every key outside :data:`VMAPPED`."""
  found: dict[str, list[member_lib.Member]] = {}
  for member in sweep_members:
    shared = {
      k: v for k, v in member.config.to_dict().items() if k not in VMAPPED
    }
    found.setdefault(repr(sorted(shared.items())), []).append(member)
  return list(found.values())


def _check_axis_value(base: ml_collections.ConfigDict, key: str, value):
  """An axis value must fit its training key's type (a number for a number,
  finite; a string for a string; ...): ConfigError naming it otherwise."""
  probe = ml_collections.ConfigDict(base.to_dict())
  try:
    probe[key] = value
  except (TypeError, ValueError):
    raise config_lib.ConfigError(
      f"config.axes.{key}: {value!r} is not a value of {key} (a "
      f"{type(base[key]).__name__}, e.g. {base[key]!r})"
    ) from None
  if isinstance(value, float) and not math.isfinite(value):
    raise config_lib.ConfigError(
      f"config.axes.{key}: {value!r} is not a finite number"
    )
