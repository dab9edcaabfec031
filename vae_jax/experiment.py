"""One run, start to finish: ``train_and_evaluate(config, workdir)``.

Writes under ``workdir``: ``config.json`` (the resolved config),
``metrics.jsonl`` and ``tensorboard/`` (per epoch), ``checkpoints/`` (orbax:
step, parameters, optimiser state, PRNG key), ``summary.json`` (the final
test numbers) and ``figures/*.png``. Calling it again on the same workdir
resumes from the newest checkpoint; the result is bit-identical to a run that
was never stopped (on CPU), because everything random is drawn from the key
inside the checkpointed state.
"""

import functools
import math
import os
import platform
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from vae_jax import checkpoints
from vae_jax import config as config_lib
from vae_jax import data
from vae_jax import evaluation
from vae_jax import logs
from vae_jax import models
from vae_jax import training


class NonFiniteLossError(RuntimeError):
  """The training loss or its gradient became NaN or infinite."""


def build_model(config, image_shape, key) -> models.VAE:
  """The VAE the config describes, initialised from ``key``."""
  return models.VAE(
      image_shape, latent_dim=config.latent_dim,
      architecture=config.architecture, hidden_sizes=config.hidden_sizes,
      activation=config.activation, likelihood=config.likelihood,
      sigma2_mode=config.sigma2_mode, sigma2_init=config.sigma2,
      min_sigma2=config.min_sigma2, rngs=nnx.Rngs(params=key))


def initial_state(config, image_shape, steps_per_epoch: int):
  """Model, graphdef, optimiser, learning-rate schedule and fresh TrainState
  of a run: everything a checkpoint is restored into."""
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  model = build_model(config, image_shape, init_key)
  schedule = training.learning_rate_schedule(
      config.lr_schedule, config.learning_rate,
      steps_per_epoch=steps_per_epoch, num_epochs=config.num_epochs)
  optimizer = training.make_optimizer(schedule, eps=config.adam_eps,
                                      grad_clip=config.grad_clip)
  graphdef, state = training.init_state(model, optimizer, train_key)
  return model, graphdef, optimizer, schedule, state


def evaluation_key(config) -> jax.Array:
  """The key of a run's test-set evaluation and figures:
  ``fold_in(key(seed), 2)``, independent of the initialisation and training
  keys that ``split(key(seed))`` gives (:func:`initial_state`). Sweeps use
  it too, so a member is evaluated as its single run would be."""
  return jax.random.fold_in(jax.random.key(config.seed), 2)


def config_hyperparameters(config, steps_per_epoch: int) -> dict:
  """The objective's scalars (:func:`training.hyperparameters`) of a config."""
  return training.hyperparameters(
      beta=config.beta, free_bits=config.free_bits,
      warmup_steps=config.kl_warmup_epochs * steps_per_epoch,
      sigma2=config.sigma2)


def model_functions(graphdef, params, sigma2):
  """(encode, log_likelihood) in the form :mod:`vae_jax.evaluation` takes."""
  model = nnx.merge(graphdef, params)

  def log_likelihood(x, z):
    logits = model.decode(z[None])
    return models.log_likelihood(model, x[None], logits, sigma2)[0]
  return model.encode, log_likelihood


def eval_sigma2(config, graphdef, params, raw_train, dataset) -> float | None:
  """The sigma^2 argument evaluation passes to the Gaussian decoder.

  ``fixed``: the config's value. ``optimal`` (sigma-VAE): the maximum-
  likelihood shared sigma^2 of the current model on the TRAINING images (the
  mean squared error of one reconstruction each, floored), so test numbers
  never use test data to set it. Otherwise None (the model's own sigma^2, or
  no Gaussian at all).
  """
  if config.likelihood != "gaussian" or config.sigma2_mode in ("learned",
                                                                "per_pixel"):
    return None
  if config.sigma2_mode == "fixed":
    return config.sigma2
  data_key, noise_key = jax.random.split(jax.random.key(config.eval_seed))
  images = data.to_unit_interval(data_key, raw_train, dataset.protocol,
                                 dataset.levels)
  return max(float(_train_mse(graphdef, params, images, noise_key)),
             config.min_sigma2)


@jax.jit
def _train_mse(graphdef, params, images, key):
  model = nnx.merge(graphdef, params)
  mean, log_variance = model.encode(images)
  z = models.reparameterize(key, mean, log_variance)
  return jnp.mean(jnp.square(images - jax.nn.sigmoid(model.decode(z))))


def bits_per_dim_offset(config, dataset: data.Dataset) -> float | None:
  """Nats per dimension to add before converting the NLL to bits/dim.

  Binary data under a Bernoulli decoder: 0 (a probability mass). Dequantized
  data under a density (Gaussian, continuous Bernoulli): log(levels), which
  turns the density on [0, 1) into a bound on the discrete NLL. Other pairs
  (a density on binary data, a Bernoulli on grey levels) are not normalised
  likelihoods of the data: None, and no bits/dim is reported.
  """
  binary = config.protocol in ("dynamic", "static") or dataset.levels == 2
  if config.likelihood == "bernoulli":
    return 0.0 if binary else None
  return None if binary else math.log(dataset.levels)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, checkpoints, evaluates and plots; returns the summary dict."""
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  config_lib.check_resumable(workdir, config.to_dict())
  checkpoints.write_json(os.path.join(workdir, "config.json"),
                         config.to_dict())

  dataset = data.load(config.source, config.protocol,
                      data_dir=config.data_dir or None)
  eval_key = evaluation_key(config)
  steps_per_epoch = len(dataset.train) // config.batch_size
  if steps_per_epoch < 1:
    raise config_lib.ConfigError(
        f"config.batch_size ({config.batch_size}) exceeds the "
        f"{len(dataset.train)} training examples")
  model, graphdef, optimizer, schedule, state = initial_state(
      config, dataset.image_shape, steps_per_epoch)
  hparams = config_hyperparameters(config, steps_per_epoch)

  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  start = ckpt.latest_epoch() or 0
  if start:
    state = ckpt.restore(start, state)
  log = logs.MetricsLog(workdir, last_epoch=start)
  raw_train = jax.device_put(dataset.train)
  test_images = jax.device_put(data.evaluation_images(dataset,
                                                      config.eval_seed))
  try:
    state = _train(config, dataset, graphdef, optimizer, state,
                           hparams, raw_train, test_images, ckpt, log, start,
                           schedule)
  finally:
    log.close()
    ckpt.close()
  summary = _final_evaluation(config, dataset, model, graphdef, state,
                              raw_train, test_images, eval_key, log.records)
  checkpoints.write_json(os.path.join(workdir, "summary.json"), summary)
  _figures(config, model, graphdef, state.params, test_images, summary,
           log.records, os.path.join(workdir, "figures"), eval_key)
  return summary


def _train(config, dataset, graphdef, optimizer, state, hparams, raw_train,
           test_images, ckpt, log, start, schedule):
  """The epoch loop. Returns the final state."""
  static = dict(batch_size=config.batch_size, protocol=dataset.protocol,
                levels=dataset.levels)
  if config.scan_epoch:
    epoch_fn = training.make_train_epoch(graphdef, optimizer, **static)
  else:
    step_fn = jax.jit(functools.partial(training.train_step, graphdef,
                                        optimizer))
    epoch_fn = functools.partial(training.train_epoch_stepwise, step_fn,
                                 **static)
  test_elbo = _test_elbo_fn(graphdef)
  bar = tqdm.tqdm(range(start + 1, config.num_epochs + 1), initial=start,
                  total=config.num_epochs, unit="epoch",
                  disable=not config.progress_bar, dynamic_ncols=True)
  for epoch in bar:
    t0 = time.perf_counter()
    state, metrics = epoch_fn(state, raw_train, hparams)
    metrics = jax.device_get(metrics)   # the one host copy of the epoch
    elapsed = time.perf_counter() - t0
    if not metrics["finite"].all():
      bad = int(np.argmin(metrics["finite"]))
      raise NonFiniteLossError(
          f"training loss became non-finite at epoch {epoch}, step "
          f"{(epoch - 1) * len(metrics['loss']) + bad + 1}; the run stopped. "
          f"Last good checkpoint: epoch {ckpt.latest_epoch() or 'none'} in "
          f"{ckpt.directory}. Try a lower learning_rate, grad_clip > 0, or a "
          "larger min_sigma2.")
    n = metrics["loss"].size * config.batch_size
    record = dict(epoch=epoch, step=int(state.step), wall_time=time.time(),
                  seconds=elapsed,
                  examples=n, examples_per_second=n / elapsed,
                  learning_rate=float(schedule(int(state.step) - 1)),
                  beta=float(metrics["beta"][-1]))
    record.update({f"train_{k}": float(np.mean(metrics[k]))
                   for k in ("loss", "elbo", "rate", "distortion")})
    if epoch % config.eval_every == 0 or epoch == config.num_epochs:
      sigma2 = eval_sigma2(config, graphdef, state.params, raw_train,
                           dataset)
      record.update(test_elbo(state.params, test_images,
                              jax.random.key(config.eval_seed), sigma2))
    log.write(record)
    if epoch % config.checkpoint_every == 0 or epoch == config.num_epochs:
      ckpt.save(epoch, state)
    bar.set_postfix(loss=f"{record['train_loss']:.2f}",
                    ex_per_s=f"{record['examples_per_second']:,.0f}")
  bar.close()
  return state


def _test_elbo_fn(graphdef):
  """A jitted ``(params, images, key, sigma2) -> {test_elbo, ...}``."""
  @jax.jit
  def terms(params, images, key, sigma2):
    encode, log_likelihood = model_functions(graphdef, params, sigma2)
    t = evaluation.elbo_terms(encode, log_likelihood, images, key)
    return {f"test_{k}": jnp.mean(t[k]) for k in ("elbo", "rate", "distortion")}

  def run(params, images, key, sigma2):
    return {k: float(v) for k, v in terms(params, images, key, sigma2).items()}
  return run


def _final_evaluation(config, dataset, model, graphdef, state, raw_train,
                      test_images, key, records):
  """The summary: test ELBO, rate, distortion, IWAE NLL, bits/dim, units."""
  sigma2 = eval_sigma2(config, graphdef, state.params, raw_train, dataset)
  encode, log_likelihood = model_functions(graphdef, state.params, sigma2)
  offset = bits_per_dim_offset(config, dataset)
  t0 = time.perf_counter()
  result = evaluation.evaluate(
      encode, log_likelihood, test_images, key,
      num_samples=config.nll_samples, chunk_size=config.nll_chunk_size,
      batch_size=config.eval_batch_size, num_dims=dataset.num_dims,
      bits_offset_nats_per_dim=offset or 0.0, progress=config.progress_bar)
  eval_seconds = time.perf_counter() - t0
  steady = [r for r in records if r["epoch"] > 1] or records
  summary = dict(
      test_elbo=result["elbo"], test_rate=result["rate"],
      test_distortion=result["distortion"], test_nll=result["nll"],
      nll_samples=result["nll_samples"],
      bits_per_dim=None if offset is None else result["bits_per_dim"],
      active_units=result["active_units"], kl_per_dim=result["kl_per_dim"],
      data_protocol=dataset.protocol, source=dataset.name,
      likelihood=config.likelihood, sigma2_mode=config.sigma2_mode,
      eval_sigma2=_sigma2_summary(model, state.params, sigma2),
      beta=config.beta, latent_dim=config.latent_dim,
      epochs=int(state.step) // (len(dataset.train) // config.batch_size),
      steps=int(state.step), num_train=len(dataset.train),
      num_test=result["num_examples"],
      train_seconds=sum(r["seconds"] for r in records),
      examples_per_second=(sum(r["examples"] for r in steady)
                           / max(sum(r["seconds"] for r in steady), 1e-9)),
      eval_seconds=eval_seconds, machine=machine())
  return summary


def _sigma2_summary(model, params, sigma2):
  if model.likelihood != "gaussian":
    return None
  if sigma2 is not None:
    return float(sigma2)
  learned = nnx.merge(nnx.graphdef(model), params).learned_sigma2()
  return float(jnp.mean(learned))


def machine() -> dict:
  """Where the numbers came from."""
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f
                 if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  device = jax.devices()[0]
  return dict(cpu=cpu, cpu_count=os.cpu_count(), platform=device.platform,
              device=device.device_kind, jax=jax.__version__,
              python=platform.python_version())


def _figures(config, model, graphdef, params, test_images, summary, records,
             directory, key):
  """Reconstructions, prior samples, curves and a latent traversal."""
  # matplotlib is ~1 s of imports: paid here, after training, not at start.
  from vae_jax import plots  # pylint: disable=g-import-not-at-top
  m = nnx.merge(graphdef, params)
  decode = jax.jit(lambda z: m.mean_image(m.decode(z)))
  x = test_images[:32]
  mean, _ = m.encode(x)
  label = (f"{config.source}, {config.likelihood}, L={config.latent_dim}, "
           f"beta={config.beta}")
  plots.reconstructions(os.path.join(directory, "reconstructions.png"),
                        np.asarray(x), np.asarray(decode(mean)),
                        f"{label}: posterior-mean reconstructions")
  z = jax.random.normal(key, (64, config.latent_dim), jnp.float32)
  plots.samples(os.path.join(directory, "samples.png"), np.asarray(decode(z)),
                f"{label}: E[x|z], z ~ N(0, I)")
  plots.curves(os.path.join(directory, "curves.png"), records)
  if config.latent_dim == 2:
    n = 15
    q = jax.scipy.special.ndtri(jnp.linspace(0.5 / n, 1 - 0.5 / n, n))
    # Row i, column j decodes (z_1, z_2) = (q_j, q_{n-1-i}): z_2 grows upward.
    z = jnp.stack(jnp.broadcast_arrays(q[None, :], q[::-1, None]), -1)
    plots.latent_grid(os.path.join(directory, "latent_traversal.png"),
                      np.asarray(decode(z.reshape(-1, 2).astype(jnp.float32))),
                      n, n, "2-D latent manifold at Gaussian quantiles",
                      "z_2", "z_1")
  else:
    dims = np.argsort(summary["kl_per_dim"])[::-1][:8]
    steps = jnp.linspace(-3, 3, 11, dtype=jnp.float32)
    z = jnp.zeros((len(dims), len(steps), config.latent_dim), jnp.float32)
    z = z.at[jnp.arange(len(dims))[:, None], :, dims[:, None]].set(steps)
    plots.latent_grid(
        os.path.join(directory, "latent_traversal.png"),
        np.asarray(decode(z.reshape(-1, config.latent_dim))), len(dims),
        len(steps), "latent traversal: one dimension per row, others at 0",
        "dims by test KL: " + ", ".join(str(int(d)) for d in dims),
        "z_j from -3 to 3")
