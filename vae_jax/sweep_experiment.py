"""A whole sweep, start to finish: ``run(config, workdir)``.

Writes under ``workdir``: ``config.json`` (the sweep config),
``groups/<g>/`` per group (``metrics.jsonl`` and ``tensorboard/`` with one
curve per member, ``checkpoints/`` of the whole SweepState, ``results.json``
once the group is done), and at the end ``results.csv`` and ``results.json``
(one row per member) and ``figures/``: the rate-distortion plane and, for
Gaussian members, beta x sigma^2 heatmaps of rate and squared error.

Calling it again resumes: finished groups are read back, an unfinished one
restarts from its newest checkpoint. Under ``jax.distributed`` every process
runs this function; all of them take part in training, checkpointing and
gathering, and process 0 alone writes logs and results (the workdir must be
on a file system all processes share).
"""

import csv
import io
import json
import math
import os
import time

from flax import nnx
import jax
import ml_collections
import numpy as np
import tqdm

from vae_jax import checkpoints
from vae_jax import config as config_lib
from vae_jax import data
from vae_jax import evaluation
from vae_jax import experiment
from vae_jax import logs
from vae_jax import sweep

# Columns of results.csv, in order (axes that are not listed here follow).
COLUMNS = (
    "member", "group", "likelihood", "sigma2_mode", "beta", "sigma2", "seed",
    "free_bits", "kl_warmup_epochs", "test_rate", "test_distortion",
    "test_sse", "test_elbo", "test_nll", "nll_samples", "bits_per_dim",
    "active_units", "eval_sigma2", "diverged", "diverged_step", "epochs",
    "steps", "group_members", "train_seconds", "eval_seconds")


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains and evaluates every member of the sweep; returns the rows."""
  sweep.validate(config)
  writer = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  config_lib.check_resumable(workdir, config.to_dict(), sweep.resume_conflicts,
                             what="sweep")
  if writer:
    checkpoints.write_json(os.path.join(workdir, "config.json"),
                           config.to_dict())
  member_configs = sweep.members(config)
  mesh = sweep.make_mesh()
  rows = []
  for g, indices in enumerate(sweep.groups(member_configs)):
    group_dir = os.path.join(workdir, "groups", f"{g:03d}")
    done = os.path.join(group_dir, "results.json")
    if os.path.exists(done):
      with open(done) as f:
        rows.extend(json.load(f))
      continue
    group_rows = _run_group(config, g, indices, member_configs, mesh,
                            group_dir, writer)
    if writer:
      checkpoints.write_json(done, group_rows)
    rows.extend(group_rows)
  rows.sort(key=lambda r: r["member"])
  if writer:
    write_results(workdir, rows, list(config.axes.keys()))
  return rows


class _NoLog:
  """Stands in for the metrics log on processes other than 0."""
  records: list = []

  def write(self, record):
    del record

  def close(self):
    pass


def _run_group(config, g, indices, member_configs, mesh, group_dir, writer):
  """Trains one group as one program; returns its members' rows."""
  configs = [member_configs[i] for i in indices]
  first = configs[0]
  dataset = data.load(first.source, first.protocol,
                      data_dir=first.data_dir or None)
  steps_per_epoch = len(dataset.train) // first.batch_size
  if steps_per_epoch < 1:
    raise config_lib.ConfigError(
        f"config.base.batch_size ({first.batch_size}) exceeds the "
        f"{len(dataset.train)} training examples")
  k = len(configs)
  padded = configs + [first] * (sweep.padded_size(k, mesh.size) - k)
  graphdef, optimizer, host_state, host_hparams = sweep.initial_sweep_state(
      padded, dataset.image_shape, steps_per_epoch)
  on_members, same = sweep.member_sharding(mesh), sweep.replicated(mesh)
  state = sweep.place(host_state, on_members)
  hparams = sweep.place(host_hparams, on_members)
  raw_train = sweep.place(dataset.train, same)

  ckpt = checkpoints.Checkpointer(os.path.join(group_dir, "checkpoints"))
  start = ckpt.latest_epoch() or 0
  if start:
    state = ckpt.restore(start, state)
  log = logs.MetricsLog(group_dir, last_epoch=start) if writer else _NoLog()
  epoch_fn = sweep.make_sweep_epoch(
      graphdef, optimizer, mesh, batch_size=first.batch_size,
      protocol=dataset.protocol, levels=dataset.levels)
  try:
    bar = tqdm.tqdm(range(start + 1, first.num_epochs + 1), initial=start,
                    total=first.num_epochs, unit="epoch",
                    desc=f"group {g} ({k} members)",
                    disable=not (first.progress_bar and writer),
                    dynamic_ncols=True)
    for epoch in bar:
      t0 = time.perf_counter()
      state, metrics = epoch_fn(state, raw_train, hparams)
      metrics, alive = sweep.gather((metrics, state.alive))
      seconds = time.perf_counter() - t0
      record = dict(epoch=epoch, seconds=seconds, members_alive=int(
          alive[:k].sum()), examples_per_second=(
              k * metrics["loss"].shape[1] * first.batch_size / seconds))
      for name in ("loss", "elbo", "rate", "distortion"):
        for m, member in enumerate(indices):
          if metrics["finite"][m].all():
            record[f"train_{name}/{member}"] = float(
                np.mean(metrics[name][m]))
      log.write(record)
      if epoch % first.checkpoint_every == 0 or epoch == first.num_epochs:
        ckpt.save(epoch, state)
      bar.set_postfix(alive=f"{record['members_alive']}/{k}")
    bar.close()
  finally:
    log.close()
    ckpt.close()
  records = [r for r in log.records if r["epoch"] > 1] or log.records
  train_seconds = sum(r["seconds"] for r in log.records)
  t0 = time.perf_counter()
  results = _evaluate(configs, padded, graphdef, mesh, state, raw_train,
                      dataset)
  eval_seconds = time.perf_counter() - t0
  diverged = sweep.gather(state.diverged_step)
  steps = sweep.gather(state.train.step)
  rows = []
  for m, (member, cfg) in enumerate(zip(indices, configs)):
    row = dict(member=member, group=g, likelihood=cfg.likelihood,
               sigma2_mode=cfg.sigma2_mode, beta=cfg.beta,
               sigma2=cfg.sigma2 if cfg.likelihood == "gaussian" else None,
               seed=cfg.seed, free_bits=cfg.free_bits,
               kl_warmup_epochs=cfg.kl_warmup_epochs)
    row.update({key: _plain(cfg[key]) for key in config.axes.keys()
                if key not in row})
    # A diverged member's frozen state is reported as diverged, not scored.
    row.update({key: None if diverged[m] > 0 or _nonfinite(value) else value
                for key, value in results[m].items()})
    row.update(diverged=bool(diverged[m] > 0),
               diverged_step=int(diverged[m]) or None,
               epochs=first.num_epochs, steps=int(steps[m]), group_members=k,
               train_seconds=train_seconds, eval_seconds=eval_seconds,
               examples_per_second=(
                   sum(r["examples_per_second"] * r["seconds"] for r in records)
                   / max(sum(r["seconds"] for r in records), 1e-9)))
    rows.append(row)
  return rows


def _nonfinite(value) -> bool:
  return isinstance(value, float) and not math.isfinite(value)


def _plain(value):
  return list(value) if isinstance(value, tuple) else value


def _evaluate(configs, padded, graphdef, mesh, state, raw_train, dataset):
  """Test ELBO, rate, distortion, IWAE NLL, bits/dim and active units of
  every member, as :func:`vae_jax.experiment` computes them for one run."""
  first = configs[0]
  on_members, same = sweep.member_sharding(mesh), sweep.replicated(mesh)
  params = state.train.params
  if first.likelihood != "gaussian" or first.sigma2_mode in ("learned",
                                                               "per_pixel"):
    sigma2 = None
  elif first.sigma2_mode == "fixed":
    sigma2 = np.array([c.sigma2 for c in padded], np.float32)
  else:
    sigma2 = sweep.fitted_sigma2(
        graphdef, mesh, params, raw_train, dataset,
        latent_dim=first.latent_dim, eval_seed=first.eval_seed,
        min_sigma2=first.min_sigma2).astype(np.float32)
  sigma2_g = None if sigma2 is None else sweep.place(sigma2, on_members)
  keys = np.stack([np.asarray(jax.random.key_data(
      experiment.evaluation_key(c))) for c in padded])
  images = data.evaluation_images(dataset, first.eval_seed)
  n = len(images)
  batch = min(first.eval_batch_size, n)
  samples = first.nll_samples
  evaluate = sweep.make_evaluator(graphdef, mesh, num_samples=samples,
                                  chunk_size=min(first.nll_chunk_size, samples),
                                  batch_size=batch)
  images_g = sweep.place(evaluation.padded_rows(images, batch), same)
  keys_g = sweep.place(keys, on_members)
  outputs = []
  for start in tqdm.trange(0, n, batch, desc="evaluate", unit="batch",
                           disable=not (first.progress_bar
                                        and jax.process_index() == 0)):
    outputs.append(sweep.gather(evaluate(
        params, sigma2_g, keys_g, images_g,
        sweep.place(np.uint32(start), same))))
  per_example = {name: np.concatenate([o[name] for o in outputs], axis=1)[:, :n]
                 for name in outputs[0]}
  offset = experiment.bits_per_dim_offset(first, dataset)
  learned = (_learned_sigma2(graphdef, params) if sigma2 is None
             and first.likelihood == "gaussian" else None)
  results = []
  for m in range(len(configs)):
    summary = evaluation.summarize({k: v[m] for k, v in per_example.items()},
                                   samples, dataset.num_dims, offset or 0.0)
    eval_sigma2 = (float(sigma2[m]) if sigma2 is not None else
                   None if learned is None else float(learned[m]))
    results.append(dict(
        test_rate=summary["rate"], test_distortion=summary["distortion"],
        test_sse=_sse(summary["distortion"], eval_sigma2, first,
                      dataset.num_dims),
        test_elbo=summary["elbo"], test_nll=summary["nll"],
        nll_samples=samples,
        bits_per_dim=None if offset is None else summary["bits_per_dim"],
        active_units=summary["active_units"], eval_sigma2=eval_sigma2,
        kl_per_dim=summary["kl_per_dim"]))
  return results


def _learned_sigma2(graphdef, params):
  """Each member's learned sigma^2 (its mean, for per-pixel ones) ``[K]``."""
  values = sweep.gather(params)
  k = len(jax.tree.leaves(values)[0])
  vaes = [nnx.merge(graphdef, jax.tree.map(lambda p, m=m: p[m], values))
          for m in range(k)]
  return np.array([float(np.mean(vae.learned_sigma2())) for vae in vaes])


def _sse(distortion, sigma2, cfg, num_dims):
  """The squared error per example behind a Gaussian distortion (nats):
  ``2 sigma2 (distortion - (D/2) log(2 pi sigma2))``; None where the
  decoder is not Gaussian with one shared sigma2."""
  if cfg.likelihood != "gaussian" or cfg.sigma2_mode == "per_pixel":
    return None
  return 2 * sigma2 * (distortion - 0.5 * num_dims * math.log(2 * math.pi
                                                               * sigma2))


# --------------------------------------------------------------------------
# Results files and figures.

def write_results(workdir: str, rows: list[dict], axes: list[str]) -> None:
  """results.json, results.csv and the figures, each written atomically."""
  checkpoints.write_json(os.path.join(workdir, "results.json"), rows)
  columns = list(COLUMNS) + [a for a in axes if a not in COLUMNS]
  text = io.StringIO()
  out = csv.DictWriter(text, columns, extrasaction="ignore",
                       lineterminator="\n")
  out.writeheader()
  for row in rows:
    out.writerow({c: "" if row.get(c) is None else row.get(c)
                  for c in columns})
  checkpoints.write_text(os.path.join(workdir, "results.csv"),
                         text.getvalue())
  figures(os.path.join(workdir, "figures"), rows)


def format_table(rows: list[dict]) -> str:
  """The results as a text table; empty cells where a value is None (a
  diverged member's test numbers, a non-Gaussian member's sigma^2)."""
  columns = (("member", "member", "d"), ("likelihood", "likelihood", "s"),
             ("beta", "beta", "g"), ("sigma2", "sigma2", "g"),
             ("seed", "seed", "d"), ("rate", "test_rate", ".3f"),
             ("distortion", "test_distortion", ".3f"),
             ("sse", "test_sse", ".3f"), ("nll", "test_nll", ".3f"),
             ("units", "active_units", "d"), ("diverged", "diverged", ""))
  cells = [[name for name, _, _ in columns]]
  for r in rows:
    cells.append(["" if r[key] is None else format(r[key], spec)
                  for _, key, spec in columns])
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  return "\n".join(" ".join(c.rjust(w) for c, w in zip(row, widths))
                   for row in cells)

def figures(directory: str, rows: list[dict]) -> None:
  """The rate-distortion plane of all members and, where the sweep has
  Gaussian members with a fixed sigma^2, the beta x sigma^2 heatmaps of rate
  and squared error (means over seeds; diverged members left out)."""
  from vae_jax import plots  # pylint: disable=g-import-not-at-top  (~1 s)
  plots.rate_distortion(
      os.path.join(directory, "rate_distortion.png"),
      [dict(rate=r["test_rate"], distortion=r["test_distortion"],
            beta=r["beta"], sigma2=r["sigma2"], likelihood=r["likelihood"],
            diverged=r["diverged"]) for r in rows],
      "test rate and distortion, one point per member")
  gaussian = [r for r in rows if r["likelihood"] == "gaussian"
              and r["sigma2_mode"] == "fixed"]
  if not gaussian:
    return
  betas = np.array(sorted({r["beta"] for r in gaussian}), float)
  sigma2s = np.array(sorted({r["sigma2"] for r in gaussian}), float)
  if len(betas) < 1 or betas.min() <= 0:
    return
  for name, label in (("test_rate", "rate (nats)"),
                      ("test_sse", "squared error per example")):
    grid = np.full((len(sigma2s), len(betas)), np.nan)
    for i, s in enumerate(sigma2s):
      for j, b in enumerate(betas):
        values = [r[name] for r in gaussian if r["beta"] == b
                  and r["sigma2"] == s and not r["diverged"]]
        if values:
          grid[i, j] = np.mean(values)
    plots.sweep_heatmap(
        os.path.join(directory, f"heatmap_{name.removeprefix('test_')}.png"),
        betas, sigma2s, grid, label,
        f"test {label}; dashed: constant 2 sigma^2 beta")
