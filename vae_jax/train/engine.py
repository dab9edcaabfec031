"""The one training loop: a group of K members, from its fresh state to Results.

A single run is a group of one member (no vmap around it, one device); a
sweep runs each of its groups through the same function. So both get the
same epoch loop (checkpoints, logs, progress, the test ELBO every
``eval_every`` epochs), the same evaluation (:mod:`~vae_jax.train.evaluation`
through the group's compiled evaluators) and the same result record
(:meth:`~vae_jax.train.results.Result.of_member`). What differs is the
group (its members' names, its devices) and the :class:`Policy` (what a
non-finite step does: a run stops with an error; a sweep member is frozen
and reported diverged while the rest go on).

Everything random is drawn from keys inside the checkpointed state, so a
group resumed from its newest checkpoint ends, on CPU, bit for bit where one
never stopped would.
"""

import dataclasses
import os
import time

import numpy as np

from vae_jax.train import config as config_lib
from vae_jax.train import evaluation
from vae_jax.train import group as group_lib
from vae_jax.train import logs
from vae_jax.train import member as member_lib
from vae_jax.train import program
from vae_jax.train import progress
from vae_jax.train import results

TRAIN_METRICS = ("loss", "elbo", "rate", "distortion")


class NonFiniteLossError(RuntimeError):
  """The training loss or its update became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Policy:
  """How :func:`run_group` treats its group.

  Attributes:
    stop_on_divergence: raise :class:`NonFiniteLossError` at the first
      non-finite step (a run) instead of freezing that member (a sweep).
    writer: whether this process writes logs and figures (process 0).
    figures: write each member's figures.
    label: shown beside the progress.
  """

  stop_on_divergence: bool = False
  writer: bool = True
  figures: bool = False
  label: str = ""


def run_group(
  group: group_lib.Group, workdir: str, policy: Policy = Policy()
) -> list[results.Result]:
  """Trains, checkpoints, logs and evaluates a group's members as one program.

  Args:
    group: the members, built and placed (:meth:`Group.build`).
    workdir: the run's or the sweep's folder; the group writes
      ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/`` and (with
      ``policy.figures``) ``figures/`` under :meth:`Group.directory`.
    policy: what a non-finite step does, who writes.

  Returns:
    One :class:`~vae_jax.train.results.Result` per member, in order.

  Raises:
    ConfigError: the group's folder holds more epochs than ``num_epochs``.
    NonFiniteLossError: with ``policy.stop_on_divergence``.
  """
  config = group.config
  directory = group.directory(workdir)
  ckpt = group.checkpointer(workdir)
  start, state = ckpt.restore_latest(group.state)
  if start > config.num_epochs:
    ckpt.close()
    raise config_lib.ConfigError(
      f"{directory} has trained {start} epochs, more than num_epochs="
      f"{config.num_epochs}; resume with num_epochs >= {start}, or use a new "
      "workdir"
    )
  log = logs.MetricsLog(directory, last_epoch=start, writer=policy.writer)
  show = config.progress_bar and policy.writer
  try:
    state = _train(group, state, ckpt, log, start, policy, show)
    out = _evaluate(group, state, log, max(start, config.num_epochs), show)
  finally:
    log.close()
    ckpt.close()
  if policy.figures and policy.writer:
    _figures(group, state, out, log, directory)
  return out


def _train(group, state, ckpt, log, start, policy, show):
  """The epoch loop. Returns the final state."""
  config, k, steps = group.config, group.size, group.steps
  parts = group.parts
  epoch_fn = program.make_epoch(
    parts.graphdef,
    parts.optimizer,
    group.mesh,
    batch_size=config.batch_size,
    protocol=group.dataset.protocol,
    levels=group.dataset.levels,
    objective=parts.objective,
  )
  test_elbo = program.make_elbo_evaluator(parts.graphdef, group.mesh)
  test_images = program.place(group.test_images, program.replicated(group.mesh))
  bar = progress.Epochs(start, config.num_epochs, policy.label, enabled=show)
  try:
    for epoch in range(start + 1, config.num_epochs + 1):
      t0 = time.perf_counter()
      state, metrics = epoch_fn(state, group.raw_train, group.hparams)
      # The one host copy of the epoch.
      metrics, alive, step = program.gather(
        (metrics, state.alive, state.train.step)
      )
      seconds = time.perf_counter() - t0
      if policy.stop_on_divergence and not metrics["finite"][:k].all():
        m, bad = np.argwhere(~metrics["finite"][:k])[0]
        raise NonFiniteLossError(
          f"training loss became non-finite at epoch {epoch}, step "
          f"{(epoch - 1) * steps + bad + 1}; the run stopped. Last good "
          f"checkpoint: epoch {ckpt.latest_epoch() or 'none'} in "
          f"{ckpt.directory}. Try a lower learning_rate, grad_clip > 0, "
          "or a larger min_sigma2."
        )
      examples = k * steps * config.batch_size
      records = []
      for m, member in enumerate(group.members):
        record = dict(
          epoch=epoch,
          step=int(step[m]),
          wall_time=time.time(),
          seconds=seconds,
          examples=examples,
          examples_per_second=examples / seconds,
          learning_rate=float(parts.schedule(int(step[m]) - 1)),
          beta=float(metrics["beta"][m, -1]),
        )
        if member.name is not None:
          record = dict(member=member.name, alive=bool(alive[m]), **record)
        if metrics["finite"][m].all():
          record.update(
            {
              f"train_{name}": float(np.mean(metrics[name][m]))
              for name in TRAIN_METRICS
            }
          )
        records.append(record)
      if epoch % config.eval_every == 0 or epoch == config.num_epochs:
        tests = program.gather(
          test_elbo(
            state.train.params,
            group.test_sigma2(state).given,
            group.key_data,
            test_images,
          )
        )
        for m, record in enumerate(records):
          if alive[m]:
            record.update({name: float(v[m]) for name, v in tests.items()})
      log.write(records)
      if epoch % config.checkpoint_every == 0 or epoch == config.num_epochs:
        ckpt.save(epoch, state)
      shown = [r for r in records if "train_loss" in r]
      bar.update(
        epoch,
        **(
          {"loss": f"{shown[0]['train_loss']:.2f}"}
          if k == 1 and shown
          else {"alive": f"{int(alive[:k].sum())}/{k}"}
        ),
        ex_per_s=f"{examples / seconds:,.0f}",
      )
  finally:
    bar.close()
  return state


def _evaluate(group, state, log, last_epoch, show):
  """Every member's test ELBO, rate, distortion, IWAE NLL, bits/dim and
  active units (:func:`evaluation.over_batches` of the group's compiled
  evaluator, :func:`evaluation.summarize`), as Results."""
  config, dataset = group.config, group.dataset
  t0 = time.perf_counter()
  sigma2 = group.test_sigma2(state)
  images = group.test_images
  n, samples = len(images), config.nll_samples
  batch = min(config.eval_batch_size, n)
  evaluate = program.make_evaluator(
    group.parts.graphdef,
    group.mesh,
    num_samples=samples,
    chunk_size=min(config.nll_chunk_size, samples),
    batch_size=batch,
  )
  same = program.replicated(group.mesh)
  padded = program.place(evaluation.padded_rows(images, batch), same)
  per_example = evaluation.over_batches(
    lambda start: program.gather(
      evaluate(
        state.train.params,
        sigma2.given,
        group.key_data,
        padded,
        program.place(np.uint32(start), same),
      )
    ),
    n,
    batch,
    axis=1,
    progress=show,
  )
  offset = member_lib.bits_per_dim_offset(config, dataset)
  diverged, step_count = program.gather((state.diverged_step, state.train.step))
  eval_seconds = time.perf_counter() - t0
  provenance = results.provenance()
  out = []
  for m, member in enumerate(group.members):
    summary = evaluation.summarize(
      {key: v[m] for key, v in per_example.items()},
      samples,
      dataset.num_dims,
      offset or 0.0,
    )
    result = results.Result.of_member(
      summary,
      member,
      group=group.index or 0,
      dataset=dataset,
      bits_offset=offset,
      sigma2_used=sigma2.used[m],
      diverged_step=int(diverged[m]),
      steps=int(step_count[m]),
      epochs=last_epoch,
      group_members=group.size,
      records=log.of(member.name),
      eval_seconds=eval_seconds,
      provenance=provenance,
    )
    out.append(result)
    log.hparams(
      member.name,
      dict(member.axes) or _hparams(member.config),
      dict(
        test_elbo=result.test_elbo,
        test_nll=result.test_nll,
        test_rate=result.test_rate,
        test_distortion=result.test_distortion,
      ),
    )
  return out


def _hparams(config) -> dict:
  """A single run's headline hyperparameters, for TensorBoard."""
  keys = (
    "likelihood",
    "sigma2_mode",
    "sigma2",
    "beta",
    "free_bits",
    "free_bits_mode",
    "latent_dim",
    "learning_rate",
    "batch_size",
    "seed",
  )
  return {k: config[k] for k in keys}


def _figures(group, state, out, log, directory):
  # Imported here: matplotlib only where figures are drawn.
  from vae_jax.train import figures

  params = program.gather(state.train.params)
  for m, (member, result) in enumerate(zip(group.members, out)):
    name = member.name
    figures.member_figures(
      os.path.join(
        directory,
        "figures",
        *([] if name is None else [name.replace("/", "_")]),
      ),
      member.config,
      group.parts.graphdef,
      program.take(params, m),
      group.test_images,
      result.kl_per_dim,
      log.of(name),
      member_lib.evaluation_key(member.config),
    )
