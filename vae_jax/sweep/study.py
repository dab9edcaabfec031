"""The reconstruction-term study: what the choice of p(x|z) does to one model.

A study config (``experiments/configs/study.py``) names a training config
``base``, the ``seeds`` (and ``seeds_by_arm``, the arms that run other
seeds), the ``fixed_sigma2`` range and which ``arms`` run. Each arm is one
decoder (:data:`ARMS`) on the same data and model; it runs as a sweep over
its seeds (:func:`arm_seeds`; for the fixed Gaussian, also sigma^2) through
:func:`vae_jax.sweep.run`, so one arm is one compiled program and a study
resumes arm by arm. :func:`cells` groups the members' Results into the
table's rows, and :func:`decoded` restores each trained member to measure
the pixel error of its reconstructions and draw its grids.
"""

import dataclasses
import functools
import math
import os

from flax import nnx
import jax
import ml_collections
import numpy as np

from vae_jax import sweep
from vae_jax.train import checkpoints
from vae_jax.train import config as config_lib
from vae_jax.train import group as group_lib
from vae_jax.train import member as member_lib
from vae_jax.train import program
from vae_jax.train import results


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
  "laplace_learned": Arm(
    "Laplace, learned shared b",
    dict(protocol="continuous", likelihood="laplace", sigma2_mode="learned"),
    "The likelihood behind the L1 loss, -|x - m| / b - log 2b per pixel, "
    "its location sigmoid(logits) and one scale b for all pixels trained "
    "with the rest (the sigma^2 keys carry b: started at sigma2, floored at "
    "min_sigma2): a density on the dequantized grey levels, like the "
    "Gaussians.",
  ),
  "discretized_logistic": Arm(
    "discretized logistic",
    dict(protocol="levels", likelihood="discretized_logistic"),
    "A logistic per pixel, its location and log-scale from the decoder, "
    "binned onto the 256 grey levels with the first and last bins open "
    "(Salimans et al., 2017). It sees the levels themselves, k / 255, no "
    "noise: a probability mass on them, so its NLL is the exact discrete "
    "one, on the scale the dequantized densities bound.",
  ),
  "discretized_logistic_mixture": Arm(
    "mixture of discretized logistics",
    # Its [B, chunk, D, 3n] output: 100 samples at a time keep it small
    # (the samples are keyed by index, so the numbers do not change).
    dict(
      protocol="levels",
      likelihood="discretized_logistic_mixture",
      nll_chunk_size=100,
    ),
    "Per pixel a mixture of mixture_components discretized logistics, "
    "the PixelCNN++ likelihood (Salimans et al., 2017; here without its "
    "coupling of RGB channels) that NVAE and VDVAE decode with: an exact "
    "discrete NLL like the row above.",
  ),
}
STUDY_KEYS = frozenset(
  {"base", "seeds", "seeds_by_arm", "fixed_sigma2", "arms"}
)


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
  _check_seeds("config.seeds", config.seeds)
  if unknown := sorted(set(config.seeds_by_arm.keys()) - set(ARMS)):
    raise config_lib.ConfigError(
      f"config.seeds_by_arm names no arm: {unknown}; arms: {tuple(ARMS)}"
    )
  for name, seeds in config.seeds_by_arm.items():
    _check_seeds(f"config.seeds_by_arm.{name}", seeds)
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


def _check_seeds(key: str, seeds) -> None:
  seeds = tuple(seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise config_lib.ConfigError(
      f"{key} must be distinct ints >= 0, got {seeds!r}"
    )


def arm_seeds(config: ml_collections.ConfigDict, name: str) -> tuple:
  """The seeds arm ``name`` runs: ``config.seeds_by_arm[name]`` where the
  config names it (an arm too costly for every seed), else ``config.seeds``."""
  return tuple(config.seeds_by_arm.get(name, config.seeds))


def arm_sweep(
  config: ml_collections.ConfigDict, name: str
) -> ml_collections.ConfigDict:
  """The sweep config of one arm: the base with the arm's keys, over its
  seeds (and the fixed sigma^2 values)."""
  out = ml_collections.ConfigDict()
  out.base = ml_collections.ConfigDict(config.base.to_dict())
  out.base.update(ARMS[name].keys)
  out.mode = "grid"
  out.member_figures = False
  axes = dict(seed=arm_seeds(config, name))
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
class Decoded:
  """What :func:`decoded` measures of one trained member."""

  pixel_mse: float  # mean over test images and pixels of (E[x|z] - x)^2
  inputs: np.ndarray  # [n, H, W, C] the first n test images
  reconstructions: np.ndarray  # [n, H, W, C] E[x|z] at the posterior mean
  samples: np.ndarray  # [n, H, W, C] E[x|z] at z ~ N(0, I)


def decoded(
  config: ml_collections.ConfigDict, name: str, workdir: str, count: int = 8
) -> list[Decoded]:
  """Restores every trained member of an arm from its last checkpoint and
  decodes the test set: the pixel error of its posterior-mean
  reconstructions and ``count`` reconstructions and prior samples.

  Prior samples use each member's evaluation key (its seed), so members of
  one seed decode the same z in every arm.
  """
  arm_members = sweep.members(arm_sweep(config, name))
  out: list[Decoded | None] = [None] * len(arm_members)
  mesh = program.make_mesh()
  for g, group_members in enumerate(sweep.groups(arm_members)):
    group = group_lib.Group.build(group_members, mesh=mesh, index=g)
    epoch, state = group.restore(arm_workdir(workdir, name))
    if epoch == 0:
      raise checkpoints.CheckpointError(
        f"study arm {name}: group {g} has no checkpoint to decode"
      )
    params = program.gather(state.train.params)
    for j, member in enumerate(group.members):
      out[member.index] = _decode(
        group.parts.graphdef,
        program.take(params, j),
        group.test_images,
        member_lib.evaluation_key(member.config),
        member.config.latent_dim,
        count,
      )
  return out  # type: ignore[return-value]


def _decode(graphdef, params, images, key, latent_dim, count) -> Decoded:
  model = nnx.merge(graphdef, params)
  reconstruct = _reconstructor(graphdef)
  recon = np.concatenate(
    [
      np.asarray(reconstruct(params, images[i : i + 500]))
      for i in range(0, len(images), 500)
    ]
  )
  z = jax.random.normal(key, (count, latent_dim), np.float32)
  samples = np.asarray(model.mean_image(model.decode(z)))
  return Decoded(
    pixel_mse=float(np.mean((recon.astype(np.float64) - images) ** 2)),
    inputs=images[:count],
    reconstructions=recon[:count],
    samples=samples,
  )


@functools.lru_cache(maxsize=16)
def _reconstructor(graphdef):
  """A jitted ``(params, x [N, H, W, C]) -> [N, H, W, C]``: E[x|z] at the
  posterior mean, one program per model structure (every seed of an arm)."""

  @jax.jit
  def reconstruct(params, x):
    model = nnx.merge(graphdef, params)
    mean, _ = model.encode(x)
    return model.mean_image(model.decode(mean))

  return reconstruct


@dataclasses.dataclass(frozen=True)
class Cell:
  """One row of the table: an arm (and a fixed sigma^2) over its seeds."""

  arm: str
  label: str
  sigma2: float | None  # the fixed arm's value; None elsewhere
  results: list  # the seeds' Results
  decoded: list  # their Decoded, same order


def cells(
  config: ml_collections.ConfigDict,
  by_arm: dict[str, list[results.Result]],
  decoded_by_arm: dict[str, list[Decoded]],
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
    for s in sorted({r.sigma2 for r in rows if r.sigma2 is not None}):
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
  ("pixel MSE", lambda r, d: d.pixel_mse),
  ("active units", lambda r, m: r.active_units),
  ("sigma^2 at test", lambda r, m: r.eval_sigma2),
)


def statistics(cell: Cell) -> dict[str, Stat]:
  """Each column's :class:`Stat` over the cell's non-diverged seeds."""
  alive = [(r, d) for r, d in zip(cell.results, cell.decoded) if not r.diverged]
  return {
    column: stat(read(r, d) for r, d in alive) for column, read in COLUMNS
  }
