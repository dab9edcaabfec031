"""The reconstruction-term study: what the choice of p(x|z) does to one model.

A study config (``experiments/configs/study.py``) names a training config
``base``, the ``seeds``, the ``fixed_sigma2`` range and which ``arms`` run.
Each arm is one decoder (:data:`ARMS`) on the same data and model; it runs
as a sweep over the seeds (and, for the fixed Gaussian, sigma^2) through
:func:`vae_jax.sweep.run`, so one arm is one compiled program and a study
resumes arm by arm. :func:`cells` groups the members' Results into the
table's rows, and :func:`decoded` restores each trained member to measure
the pixel error of its reconstructions and draw its grids.
"""

import dataclasses
import math
import os

from flax import nnx
import jax
import ml_collections
import numpy as np

from vae_jax import sweep
from vae_jax.train import checkpoints
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import program
from vae_jax.train import results
from vae_jax.train import setup


@dataclasses.dataclass(frozen=True)
class Arm:
  """One decoder of the study."""

  label: str  # the table's name of it
  keys: dict  # training config keys it sets
  meaning: str  # what its numbers are, for the report


ARMS = {
  "bernoulli_binary": Arm(
    "Bernoulli, binarized digits",
    dict(protocol="dynamic", likelihood="bernoulli"),
    "Each training batch binarized anew, x ~ Bernoulli(grey level); the test "
    "set binarized once. log p(x|z) is a probability mass on {0,1}^D, so its "
    "NLL is in bits per binary pixel: a different data set from the grey "
    "levels below, not comparable with their bits/dim.",
  ),
  "bernoulli_grey": Arm(
    "Bernoulli on grey levels",
    dict(protocol="continuous", likelihood="bernoulli"),
    "The grey levels in [0, 1] as soft targets of a Bernoulli: its "
    "'log-likelihood' is minus a cross-entropy, which is not a density on "
    "[0, 1] (it lacks the continuous Bernoulli's normaliser), so it has no "
    "bits/dim; its ELBO and distortion are not log-likelihoods either.",
  ),
  "continuous_bernoulli": Arm(
    "continuous Bernoulli",
    dict(protocol="continuous", likelihood="continuous_bernoulli"),
    "The Bernoulli's form with its normalising constant (Loaiza-Ganem and "
    "Cunningham, 2019): a density on [0, 1], its reconstructions the "
    "distribution's mean, not sigmoid(logits).",
  ),
  "gaussian_fixed": Arm(
    "Gaussian, fixed sigma^2",
    dict(protocol="continuous", likelihood="gaussian", sigma2_mode="fixed"),
    "An isotropic Gaussian with one sigma^2 chosen beforehand, one row per "
    "value: the sigma^2 sets the weight of the squared error against the "
    "KL (the sigma^2-beta trade).",
  ),
  "gaussian_learned": Arm(
    "Gaussian, learned shared sigma^2",
    dict(protocol="continuous", likelihood="gaussian", sigma2_mode="learned"),
    "One sigma^2 for all pixels, a parameter trained with the rest (floored "
    "at min_sigma2).",
  ),
  "gaussian_per_pixel": Arm(
    "Gaussian, learned per-pixel sigma^2",
    dict(protocol="continuous", likelihood="gaussian", sigma2_mode="per_pixel"),
    "One trained sigma^2 per pixel, the same for every image (floored at "
    "min_sigma2).",
  ),
  "gaussian_optimal": Arm(
    "Gaussian, optimal sigma^2",
    dict(protocol="continuous", likelihood="gaussian", sigma2_mode="optimal"),
    "sigma-VAE (Rybkin et al., 2021): each batch's sigma^2 is its own "
    "maximum-likelihood value, the batch's mean squared error; at test the "
    "training set's.",
  ),
}
STUDY_KEYS = frozenset({"base", "seeds", "fixed_sigma2", "arms"})


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a study config; raises ConfigError naming the key."""
  keys = set(config.keys())
  if keys != STUDY_KEYS:
    raise config_lib.ConfigError(
      f"a study config has exactly the keys {sorted(STUDY_KEYS)}; got "
      f"unknown {sorted(keys - STUDY_KEYS)}, missing "
      f"{sorted(STUDY_KEYS - keys)}"
    )
  arms = tuple(config.arms)
  if not arms or len(set(arms)) != len(arms) or set(arms) - set(ARMS):
    raise config_lib.ConfigError(
      f"config.arms must be distinct names from {tuple(ARMS)}, got {arms!r}"
    )
  seeds = tuple(config.seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise config_lib.ConfigError(
      f"config.seeds must be distinct ints >= 0, got {seeds!r}"
    )
  values = tuple(config.fixed_sigma2)
  if "gaussian_fixed" in arms and not values:
    raise config_lib.ConfigError(
      "config.fixed_sigma2 must name at least one sigma^2 for gaussian_fixed"
    )
  for name in arms:
    try:
      sweep.validate(arm_sweep(config, name))
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f"study arm {name}: {e}") from None


def arm_sweep(
  config: ml_collections.ConfigDict, name: str
) -> ml_collections.ConfigDict:
  """The sweep config of one arm: the base with the arm's keys, over the
  seeds (and the fixed sigma^2 values)."""
  out = ml_collections.ConfigDict()
  out.base = ml_collections.ConfigDict(config.base.to_dict())
  out.base.update(ARMS[name].keys)
  out.mode = "grid"
  out.member_figures = False
  axes = dict(seed=tuple(config.seeds))
  if name == "gaussian_fixed":
    axes["sigma2"] = tuple(float(s) for s in config.fixed_sigma2)
  out.axes = ml_collections.ConfigDict(axes)
  return out


def arm_workdir(workdir: str, name: str) -> str:
  return os.path.join(workdir, "arms", name)


def run(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, list[results.Result]]:
  """Trains and evaluates every arm (a sweep each, resumable); returns each
  arm's Results in member order."""
  validate(config)
  return {
    name: sweep.run(arm_sweep(config, name), arm_workdir(workdir, name))
    for name in config.arms
  }


@dataclasses.dataclass(frozen=True)
class Member:
  """What :func:`decoded` measures of one trained member."""

  pixel_mse: float  # mean over test images and pixels of (E[x|z] - x)^2
  inputs: np.ndarray  # [n, H, W, C] the first n test images
  reconstructions: np.ndarray  # [n, H, W, C] E[x|z] at the posterior mean
  samples: np.ndarray  # [n, H, W, C] E[x|z] at z ~ N(0, I)


def decoded(
  config: ml_collections.ConfigDict, name: str, workdir: str, count: int = 8
) -> list[Member]:
  """Restores every trained member of an arm from its last checkpoint and
  decodes the test set: the pixel error of its posterior-mean
  reconstructions and ``count`` reconstructions and prior samples.

  Prior samples use each member's evaluation key (its seed), so members of
  one seed decode the same z in every arm.
  """
  configs = sweep.members(arm_sweep(config, name))
  out = [None] * len(configs)
  mesh = program.make_mesh()
  for g, indices in enumerate(sweep.groups(configs)):
    group = [configs[i] for i in indices]
    first = group[0]
    dataset = data.load(first.source, first.protocol)
    steps = setup.steps_per_epoch(first, len(dataset.train))
    padded = group + [first] * (
      program.padded_size(len(group), mesh.size) - len(group)
    )
    head, state, _, _ = setup.placed_group(padded, dataset, mesh, steps)
    ckpt = checkpoints.Checkpointer(
      os.path.join(
        arm_workdir(workdir, name), "groups", f"{g:03d}", "checkpoints"
      )
    )
    try:
      epoch, state = ckpt.restore_latest(state)
    finally:
      ckpt.close()
    if epoch == 0:
      raise checkpoints.CheckpointError(
        f"study arm {name}: group {g} has no checkpoint to decode"
      )
    params = program.gather(state.train.params)
    images = data.evaluation_images(dataset, first.eval_seed)
    for j, (i, member_config) in enumerate(zip(indices, group)):
      out[i] = _decode(
        head.graphdef,
        program.member(params, j),
        images,
        setup.evaluation_key(member_config),
        member_config.latent_dim,
        count,
      )
  return out


def _decode(graphdef, params, images, key, latent_dim, count) -> Member:
  model = nnx.merge(graphdef, params)

  @jax.jit
  def reconstruct(x):
    mean, _ = model.encode(x)
    return model.mean_image(model.decode(mean))

  recon = np.concatenate(
    [
      np.asarray(reconstruct(images[i : i + 500]))
      for i in range(0, len(images), 500)
    ]
  )
  z = jax.random.normal(key, (count, latent_dim), np.float32)
  samples = np.asarray(model.mean_image(model.decode(z)))
  return Member(
    pixel_mse=float(np.mean((recon.astype(np.float64) - images) ** 2)),
    inputs=images[:count],
    reconstructions=recon[:count],
    samples=samples,
  )


@dataclasses.dataclass(frozen=True)
class Cell:
  """One row of the table: an arm (and a fixed sigma^2) over its seeds."""

  arm: str
  label: str
  sigma2: float | None  # the fixed arm's value; None elsewhere
  results: list  # the seeds' Results
  members: list  # their Members (decoded), same order


def cells(
  config: ml_collections.ConfigDict,
  by_arm: dict[str, list[results.Result]],
  decoded_by_arm: dict[str, list[Member]],
) -> list[Cell]:
  """The table's rows in order: each arm, the fixed Gaussian once per
  sigma^2 (ascending)."""
  out = []
  for name in config.arms:
    rows, decoded_rows = by_arm[name], decoded_by_arm[name]
    arm = ARMS[name]
    if name != "gaussian_fixed":
      out.append(Cell(name, arm.label, None, rows, decoded_rows))
      continue
    for s in sorted({r.sigma2 for r in rows}):
      pick = [i for i, r in enumerate(rows) if r.sigma2 == s]
      out.append(
        Cell(
          name,
          f"{arm.label} = {s:g}",
          s,
          [rows[i] for i in pick],
          [decoded_rows[i] for i in pick],
        )
      )
  return out


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean and sample standard deviation (ddof = 1) over the seeds that
  have the number; ``n`` of them (0: none, mean None)."""

  mean: float | None
  sd: float | None
  n: int


def stat(values) -> Stat:
  kept = [float(v) for v in values if v is not None and math.isfinite(v)]
  if not kept:
    return Stat(None, None, 0)
  sd = float(np.std(kept, ddof=1)) if len(kept) > 1 else None
  return Stat(float(np.mean(kept)), sd, len(kept))


# The table's numbers: (column, how one member's value is read).
COLUMNS = (
  ("bits/dim", lambda r, m: r.bits_per_dim),
  ("NLL (nats)", lambda r, m: r.test_nll),
  ("-ELBO (nats)", lambda r, m: None if r.test_elbo is None else -r.test_elbo),
  ("rate (nats)", lambda r, m: r.test_rate),
  ("distortion (nats)", lambda r, m: r.test_distortion),
  ("pixel MSE", lambda r, m: m.pixel_mse),
  ("active units", lambda r, m: r.active_units),
  ("sigma^2 at test", lambda r, m: r.eval_sigma2),
)


def statistics(cell: Cell) -> dict[str, Stat]:
  """Each column's :class:`Stat` over the cell's non-diverged seeds."""
  alive = [(r, m) for r, m in zip(cell.results, cell.members) if not r.diverged]
  return {
    column: stat(read(r, m) for r, m in alive) for column, read in COLUMNS
  }
