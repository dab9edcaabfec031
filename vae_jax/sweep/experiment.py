"""A whole sweep, start to finish: ``run(config, workdir)``.

Writes under ``workdir``: ``config.json`` (the sweep config),
``groups/<g>/`` per group (``metrics.jsonl``, ``tensorboard/<member>/`` with
one run per member named by its hyperparameters, ``checkpoints/`` of the
whole group state, ``figures/<member>/`` with ``member_figures``, and
``results.json`` once the group is done), and at the end ``results.csv`` and
``results.json`` (one row per member: the fields of
:class:`~vae_jax.train.results.Result`) and ``figures/``: the rate-distortion
plane and, for Gaussian members, beta x sigma^2 heatmaps of rate and squared
error.

Each group goes through :func:`vae_jax.train.engine.run_group`, the loop a
single run uses. Calling ``run`` again resumes: finished groups are read
back, an unfinished one restarts from its newest checkpoint. Under
``jax.distributed`` every process runs this function; all of them take part
in training, checkpointing and gathering, and process 0 alone writes logs and
results (the workdir must be on a file system all processes share).
"""

import csv
import io
import json
import os

import jax
import ml_collections
import numpy as np

from vae_jax.sweep import members as members_lib
from vae_jax.train import engine
from vae_jax.train import files
from vae_jax.train import group as group_lib
from vae_jax.train import program
from vae_jax.train import results
from vae_jax.train import workdir as workdir_lib


def run(
  config: ml_collections.ConfigDict, workdir: str
) -> list[results.Result]:
  """Trains and evaluates every member of the sweep; returns the Results."""
  members_lib.validate(config)
  writer = jax.process_index() == 0
  workdir = workdir_lib.prepare(workdir)
  with workdir_lib.locked(workdir, enabled=writer):
    workdir_lib.check_resumable(
      workdir, config.to_dict(), members_lib.resume_conflicts, what="sweep"
    )
    if writer:
      files.write_json(os.path.join(workdir, "config.json"), config.to_dict())
    out = []
    mesh = program.make_mesh()
    for g, group_members in enumerate(
      members_lib.groups(members_lib.members(config))
    ):
      group_dir = group_lib.directory(workdir, g)
      done = _finished(group_dir, config.base.num_epochs)
      if done is not None:
        out.extend(done)
        continue
      group = group_lib.Group.build(group_members, mesh=mesh, index=g)
      group_results = engine.run_group(
        group,
        workdir,
        engine.Policy(
          writer=writer,
          figures=config.member_figures,
          label=f"group {g} ({group.size} members)",
        ),
      )
      if writer:
        files.write_json(
          os.path.join(group_dir, group_lib.RESULTS),
          [r.to_dict() for r in group_results],
        )
      out.extend(group_results)
    out.sort(key=lambda r: r.member)
    if writer:
      write_results(workdir, out, list(config.axes.keys()))
  return out


def _finished(group_dir: str, num_epochs: int) -> list[results.Result] | None:
  """A finished group's Results, if it was trained for ``num_epochs``; None
  if it must (still, or further) train: a group resumed with more epochs
  trains on from its last checkpoint, and one resumed with fewer is refused
  by the engine."""
  path = os.path.join(group_dir, group_lib.RESULTS)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [results.Result(**row) for row in json.load(f)]
  return rows if all(r.epochs == num_epochs for r in rows) else None


def write_results(
  workdir: str, rows: list[results.Result], axes: list[str]
) -> None:
  """results.json, results.csv and the figures, each written atomically.
  The CSV holds every scalar field of a Result, then any axis that is not
  one of them."""
  files.write_json(
    os.path.join(workdir, "results.json"), [r.to_dict() for r in rows]
  )
  extra = [a for a in axes if a not in results.CSV_COLUMNS]
  columns = list(results.CSV_COLUMNS) + extra
  text = io.StringIO()
  out = csv.DictWriter(text, columns, lineterminator="\n")
  out.writeheader()
  for r in rows:
    out.writerow(
      {
        **results.fields_of(r),
        **{a: "" if r.axes.get(a) is None else r.axes[a] for a in extra},
      }
    )
  files.write_text(os.path.join(workdir, "results.csv"), text.getvalue())
  figures(os.path.join(workdir, "figures"), rows)


def figures(directory: str, rows: list[results.Result]) -> None:
  """The rate-distortion plane of all members and, where the sweep has
  Gaussian members with a fixed sigma^2, the beta x sigma^2 heatmaps of rate
  and squared error (means over seeds; diverged members left out)."""
  # Imported here: matplotlib takes a second to import.
  from vae_jax.train import plots

  plots.rate_distortion(
    os.path.join(directory, "rate_distortion.png"),
    [
      dict(
        rate=r.test_rate,
        distortion=r.test_distortion,
        beta=r.beta,
        sigma2=r.sigma2,
        likelihood=r.likelihood,
        diverged=r.diverged,
      )
      for r in rows
    ],
    "test rate and distortion, one point per member",
  )
  gaussian = [
    r.to_dict()
    for r in rows
    if r.likelihood == "gaussian" and r.sigma2_mode == "fixed"
  ]
  if not gaussian:
    return
  betas = np.array(sorted({r["beta"] for r in gaussian}), float)
  sigma2s = np.array(sorted({r["sigma2"] for r in gaussian}), float)
  if len(betas) < 1 or betas.min() <= 0:
    return
  for name, label in (
    ("test_rate", "rate (nats)"),
    ("test_sse", "squared error per example"),
  ):
    grid = np.full((len(sigma2s), len(betas)), np.nan)
    for i, s in enumerate(sigma2s):
      for j, b in enumerate(betas):
        values = [
          r[name]
          for r in gaussian
          if r["beta"] == b and r["sigma2"] == s and not r["diverged"]
        ]
        if values:
          grid[i, j] = np.mean(values)
    plots.sweep_heatmap(
      os.path.join(directory, f"heatmap_{name.removeprefix('test_')}.png"),
      betas,
      sigma2s,
      grid,
      label,
      f"test {label}; dashed: constant 2 sigma^2 beta",
    )
