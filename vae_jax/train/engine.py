"""The one training loop: a group of K members, from configs to Results.

A single run is a group of one member (no vmap around it, one device); a
sweep runs each of its groups through the same function. So both get the
same setup (:mod:`~vae_jax.train.setup`), epoch loop (checkpoints, logs,
progress, the test ELBO every ``eval_every`` epochs), evaluation rules (which
sigma^2, the bits/dim offset, active units) and result record
(:class:`~vae_jax.train.results.Result`). What differs is said by the
arguments: the members' names (a sweep's logs and TensorBoard runs are named
by them), the devices, and what a non-finite step does (a run stops with an
error; a sweep member is frozen and reported diverged while the rest go on).

Everything random is drawn from keys inside the checkpointed state, so a
group resumed from its newest checkpoint ends, on CPU, bit for bit where one
never stopped would.
"""

import dataclasses
import os
import time

import jax
import ml_collections
import numpy as np

from vae_jax.train import checkpoints
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import evaluation
from vae_jax.train import logs
from vae_jax.train import program
from vae_jax.train import progress
from vae_jax.train import results
from vae_jax.train import setup

TRAIN_METRICS = ("loss", "elbo", "rate", "distortion")


class NonFiniteLossError(RuntimeError):
  """The training loss or its update became NaN or infinite."""


def run_group(
  configs: list[ml_collections.ConfigDict],
  workdir: str,
  *,
  names: list[str] | None = None,
  axes: list[dict] | None = None,
  members: list[int] | None = None,
  group: int = 0,
  mesh: jax.sharding.Mesh | None = None,
  stop_on_divergence: bool = False,
  writer: bool = True,
  figures: bool = False,
  label: str = "",
  config_prefix: str = "config",
) -> list[results.Result]:
  """Trains, checkpoints, logs and evaluates K members as one program.

  Args:
    configs: the members' training configs; they may differ only in the
      keys of :data:`vae_jax.sweep.VMAPPED` (beta, sigma2, free_bits,
      free_bits_mode, kl_warmup_epochs, seed).
    workdir: where ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/`` and
      (with ``figures``) ``figures/`` go.
    names: the members' names in logs, TensorBoard and figures
      (``"beta=0.5,sigma2=0.01"``); None for a single run (one member,
      unnamed records).
    axes: each member's values on the sweep's axes (its Result's ``axes``
      and TensorBoard hparams); None: none.
    members, group: the members' indices in their sweep and the group's
      (for the Results); default ``0 .. K-1`` and 0.
    mesh: devices; default one local device. K is padded to a multiple of
      its size.
    stop_on_divergence: raise :class:`NonFiniteLossError` at the first
      non-finite step (a single run) instead of freezing that member.
    writer: whether this process writes logs and figures (process 0).
    figures: write each member's figures.
    label: shown beside the progress.
    config_prefix: how errors name the configs' keys (``config.base`` for
      a sweep).

  Returns:
    One :class:`~vae_jax.train.results.Result` per member, in order.
  """
  first, k = configs[0], len(configs)
  names = names if names is not None else [None] * k
  dataset = data.load(
    first.source, first.protocol, data_dir=first.data_dir or None
  )
  steps = setup.steps_per_epoch(first, len(dataset.train), config_prefix)
  mesh = mesh or program.make_mesh(jax.local_devices()[:1])
  padded = configs + [first] * (program.padded_size(k, mesh.size) - k)
  head, state, hparams, raw_train = setup.placed_group(
    padded, dataset, mesh, steps
  )
  on_members = program.member_sharding(mesh)
  test_images = data.evaluation_images(dataset, first.eval_seed)
  key_data = program.place(
    np.stack(
      [np.asarray(jax.random.key_data(setup.evaluation_key(c))) for c in padded]
    ),
    on_members,
  )

  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  start, state = ckpt.restore_latest(state)
  if start > first.num_epochs:
    ckpt.close()
    raise config_lib.ConfigError(
      f"{workdir} has trained {start} epochs, more than "
      f"{config_prefix}.num_epochs={first.num_epochs}; resume with "
      f"num_epochs >= {start}, or use a new workdir"
    )
  log = logs.MetricsLog(workdir, last_epoch=start, writer=writer)
  context = _Context(
    configs=configs,
    padded=padded,
    names=names,
    head=head,
    mesh=mesh,
    dataset=dataset,
    raw_train=raw_train,
    test_images=test_images,
    key_data=key_data,
  )
  try:
    state = _train(
      context,
      state,
      hparams,
      ckpt,
      log,
      start,
      steps,
      stop_on_divergence=stop_on_divergence,
      show=first.progress_bar and writer,
      label=label,
    )
    out = _evaluate(
      context,
      state,
      log,
      steps,
      members or list(range(k)),
      group,
      axes or [{}] * k,
      max(start, first.num_epochs),
      show=first.progress_bar and writer,
    )
  finally:
    log.close()
    ckpt.close()
  if figures and writer:
    _figures(context, state, out, log, workdir)
  return out


@dataclasses.dataclass(frozen=True)
class _Context:
  """What the loop and the evaluation of one group share."""

  configs: list[ml_collections.ConfigDict]  # the K members
  padded: list[ml_collections.ConfigDict]  # and the device-count padding
  names: list[str | None]
  head: setup.Member  # the first member, built
  mesh: jax.sharding.Mesh
  dataset: data.Dataset
  raw_train: jax.Array  # replicated on the mesh
  test_images: np.ndarray  # [N, H, W, C] in [0, 1], host
  key_data: jax.Array  # [K_padded, 2] evaluation keys


def _train(
  ctx,
  state,
  hparams,
  ckpt,
  log,
  start,
  steps,
  *,
  stop_on_divergence,
  show,
  label,
):
  """The epoch loop. Returns the final state."""
  first, k = ctx.configs[0], len(ctx.configs)
  epoch_fn = program.make_epoch(
    ctx.head.graphdef,
    ctx.head.optimizer,
    ctx.mesh,
    batch_size=first.batch_size,
    protocol=ctx.dataset.protocol,
    levels=ctx.dataset.levels,
    scan=first.scan_epoch,
  )
  test_elbo = program.make_elbo_evaluator(ctx.head.graphdef, ctx.mesh)
  test_images = program.place(ctx.test_images, program.replicated(ctx.mesh))
  bar = progress.Epochs(start, first.num_epochs, label, enabled=show)
  try:
    for epoch in range(start + 1, first.num_epochs + 1):
      t0 = time.perf_counter()
      state, metrics = epoch_fn(state, ctx.raw_train, hparams)
      # The one host copy of the epoch.
      metrics, alive, step = program.gather(
        (metrics, state.alive, state.train.step)
      )
      seconds = time.perf_counter() - t0
      if stop_on_divergence and not metrics["finite"][:k].all():
        m, bad = np.argwhere(~metrics["finite"][:k])[0]
        raise NonFiniteLossError(
          f"training loss became non-finite at epoch {epoch}, step "
          f"{(epoch - 1) * steps + bad + 1}; the run stopped. Last good "
          f"checkpoint: epoch {ckpt.latest_epoch() or 'none'} in "
          f"{ckpt.directory}. Try a lower learning_rate, grad_clip > 0, "
          "or a larger min_sigma2."
        )
      examples = k * steps * first.batch_size
      records = []
      for m in range(k):
        record = dict(
          epoch=epoch,
          step=int(step[m]),
          wall_time=time.time(),
          seconds=seconds,
          examples=examples,
          examples_per_second=examples / seconds,
          learning_rate=float(ctx.head.schedule(int(step[m]) - 1)),
          beta=float(metrics["beta"][m, -1]),
        )
        if ctx.names[m] is not None:
          record = dict(member=ctx.names[m], alive=bool(alive[m]), **record)
        if metrics["finite"][m].all():
          record.update(
            {
              f"train_{name}": float(np.mean(metrics[name][m]))
              for name in TRAIN_METRICS
            }
          )
        records.append(record)
      if epoch % first.eval_every == 0 or epoch == first.num_epochs:
        sigma2 = _eval_sigma2(ctx, state)
        tests = program.gather(
          test_elbo(
            state.train.params,
            _place_sigma2(ctx, sigma2),
            ctx.key_data,
            test_images,
          )
        )
        for m, record in enumerate(records):
          if alive[m]:
            record.update({name: float(v[m]) for name, v in tests.items()})
      log.write(records)
      if epoch % first.checkpoint_every == 0 or epoch == first.num_epochs:
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


def _eval_sigma2(ctx, state) -> np.ndarray | None:
  """The sigma^2 each member is scored with ``[K]`` (float32), or None where
  the models' own (learned) sigma^2 or no sigma^2 applies
  (:func:`setup.eval_sigma2_rule`)."""
  first = ctx.configs[0]
  rule = setup.eval_sigma2_rule(first)
  if rule == setup.FIXED:
    return np.array([c.sigma2 for c in ctx.padded], np.float32)
  if rule == setup.FITTED:
    return program.fitted_sigma2(
      ctx.head.graphdef,
      ctx.mesh,
      state.train.params,
      ctx.raw_train,
      ctx.dataset,
      latent_dim=first.latent_dim,
      eval_seed=first.eval_seed,
      min_sigma2=first.min_sigma2,
    ).astype(np.float32)
  return None


def _place_sigma2(ctx, sigma2):
  return (
    None
    if sigma2 is None
    else program.place(sigma2, program.member_sharding(ctx.mesh))
  )


def _evaluate(
  ctx, state, log, steps, members, group, axes, last_epoch, *, show
):
  """Test ELBO, rate, distortion, IWAE NLL, bits/dim and active units of
  every member (:mod:`vae_jax.train.evaluation`), as Results."""
  first, k, dataset = ctx.configs[0], len(ctx.configs), ctx.dataset
  t0 = time.perf_counter()
  sigma2 = _eval_sigma2(ctx, state)
  images = ctx.test_images
  n, samples = len(images), first.nll_samples
  batch = min(first.eval_batch_size, n)
  evaluate = program.make_evaluator(
    ctx.head.graphdef,
    ctx.mesh,
    num_samples=samples,
    chunk_size=min(first.nll_chunk_size, samples),
    batch_size=batch,
  )
  same = program.replicated(ctx.mesh)
  images_g = program.place(evaluation.padded_rows(images, batch), same)
  sigma2_g = _place_sigma2(ctx, sigma2)
  outputs = [
    program.gather(
      evaluate(
        state.train.params,
        sigma2_g,
        ctx.key_data,
        images_g,
        program.place(np.uint32(s), same),
      )
    )
    for s in progress.batches(range(0, n, batch), "evaluate", show)
  ]
  per_example = {
    name: np.concatenate([o[name] for o in outputs], axis=1)[:, :n]
    for name in outputs[0]
  }
  rule = setup.eval_sigma2_rule(first)
  learned = (
    program.learned_sigma2(ctx.head.graphdef, state.train.params)
    if rule == setup.MODEL
    else None
  )
  offset = setup.bits_per_dim_offset(first, dataset)
  diverged, step_count = program.gather((state.diverged_step, state.train.step))
  eval_seconds = time.perf_counter() - t0
  provenance = results.provenance()
  out = []
  for m, config in enumerate(ctx.configs):
    summary = evaluation.summarize(
      {key: v[m] for key, v in per_example.items()},
      samples,
      dataset.num_dims,
      offset or 0.0,
    )
    # The sigma^2 used, as used (float32); a fixed one as the config says.
    used = (
      float(sigma2[m])
      if sigma2 is not None
      else float(np.float32(learned[m]))
      if learned is not None
      else None
    )
    shown = (
      config.sigma2
      if rule == setup.FIXED
      else results.plain_float(np.float32(used))
      if used is not None
      else None
    )
    scored = not diverged[m]
    test = lambda value: value if scored else None
    sse = (
      results.squared_error(summary["distortion"], used, dataset.num_dims)
      if used is not None and config.sigma2_mode != "per_pixel"
      else None
    )
    records = log.of(ctx.names[m])
    steady = [r for r in records if r["epoch"] > 1] or records
    out.append(
      results.Result(
        name=ctx.names[m] or "",
        member=members[m],
        group=group,
        source=dataset.name,
        data_protocol=dataset.protocol,
        likelihood=config.likelihood,
        sigma2_mode=config.sigma2_mode,
        beta=config.beta,
        sigma2=config.sigma2 if rule is not None else None,
        seed=config.seed,
        free_bits=config.free_bits,
        free_bits_mode=config.free_bits_mode,
        kl_warmup_epochs=config.kl_warmup_epochs,
        latent_dim=config.latent_dim,
        test_elbo=test(results.plain_float(summary["elbo"])),
        test_rate=test(results.plain_float(summary["rate"])),
        test_distortion=test(results.plain_float(summary["distortion"])),
        test_sse=test(results.plain_float(sse)),
        test_nll=test(results.plain_float(summary["nll"])),
        nll_samples=samples,
        bits_per_dim=test(
          None
          if offset is None
          else results.plain_float(summary["bits_per_dim"])
        ),
        active_units=test(summary["active_units"]),
        kl_per_dim=test(summary["kl_per_dim"]),
        eval_sigma2=test(shown),
        diverged=bool(diverged[m]),
        diverged_step=int(diverged[m]) or None,
        epochs=last_epoch,
        steps=int(step_count[m]),
        num_train=len(dataset.train),
        num_test=n,
        group_members=k,
        train_seconds=sum(r["seconds"] for r in records),
        timed_epochs=len(records),
        examples_per_second=(
          sum(r["examples"] for r in steady)
          / max(sum(r["seconds"] for r in steady), 1e-9)
        ),
        eval_seconds=eval_seconds,
        axes=axes[m],
        provenance=provenance,
      )
    )
    log.hparams(
      ctx.names[m],
      dict(axes[m]) or _hparams(config),
      dict(
        test_elbo=out[-1].test_elbo,
        test_nll=out[-1].test_nll,
        test_rate=out[-1].test_rate,
        test_distortion=out[-1].test_distortion,
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


def _figures(ctx, state, out, log, workdir):
  from vae_jax.train import figures  # pylint: disable=g-import-not-at-top

  params = program.gather(state.train.params)
  for m, (config, result) in enumerate(zip(ctx.configs, out)):
    name = ctx.names[m]
    directory = os.path.join(
      workdir, "figures", *([] if name is None else [name.replace("/", "_")])
    )
    figures.member_figures(
      directory,
      config,
      ctx.head.graphdef,
      program.member(params, m),
      ctx.test_images,
      result.kl_per_dim,
      log.of(name),
      setup.evaluation_key(config),
    )
