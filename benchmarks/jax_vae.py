"""The JAX side of the PyTorch comparison: the same job as ``torch_vae.py``.

  python -m benchmarks.jax_vae --form epoch --batch_size 128 --epochs 10

Trains the default model (MLP 784-400-20, Bernoulli decoder, dynamic
binarization, Adam 1e-3) on mnist5k with vae_jax's own functions, then
reports the single-sample test ELBO, exactly as ``benchmarks/torch_vae.py``
does in PyTorch. Two forms:

* ``epoch``: a whole epoch in one jitted program, the path
  ``experiments/train.py`` takes: a ``group.Group`` of one member on one
  device and ``program.make_epoch`` (a single run's unchecked
  ``lax.scan`` over the steps, ``training.unchecked_epoch``);
* ``step``: one jitted ``training.guarded_step`` called from Python per
  batch, its inputs drawn as an epoch draws them (``training.epoch_inputs``,
  ``training.batch_inputs``). A contender, like PyTorch's eager loop, not a
  form the library trains with: the loop is this benchmark's own.

Prints one JSON object per line, the protocol ``benchmarks/compare.py``
reads: ``ready`` (after imports and data; in the ``epoch`` form after
``Group.build``, which loads the data and also builds and places the model),
``epoch`` (one per epoch; the device is synchronised before the clock is
read), ``done`` (test ELBO), each with ``time`` = ``time.time()``.
``--compilation_cache DIR`` turns on JAX's persistent compilation cache (what
"warm start" means in the results).
"""

import time

_START = time.time()  # before the imports: they are part of start-up

import argparse
import functools
import json
import sys

import jax
import jax.numpy as jnp

from experiments import cli
from experiments.configs import default
from vae_jax.train import data
from vae_jax.train import evaluation
from vae_jax.train import group
from vae_jax.train import member
from vae_jax.train import program
from vae_jax.train import training

FORMS = ("epoch", "step")


def _emit(event: str, **fields) -> None:
  print(json.dumps(dict(event=event, time=time.time(), **fields)), flush=True)


def _step_epoch(parts: member.Parts, dataset: data.Dataset, batch_size: int):
  """The ``step`` contender's epoch: ``(state, raw_train, hparams) ->
  (state, metrics)``, one jitted ``training.guarded_step`` per batch called
  from Python, with the batches, keys and binarization of
  ``training.train_epoch``."""
  step_fn = jax.jit(
    functools.partial(training.guarded_step, parts.graphdef, parts.optimizer)
  )
  batch_fn = jax.jit(
    training.batch_inputs, static_argnames=("protocol", "levels")
  )

  def epoch_fn(state, raw_train, hparams):
    next_key, batches, keys = training.epoch_inputs(
      state.key, raw_train.shape[0], batch_size
    )
    ok, history = jnp.asarray(True), []
    for idx, key in zip(batches, keys):
      x, noise_key = batch_fn(
        raw_train, idx, key, protocol=dataset.protocol, levels=dataset.levels
      )
      state, ok, metrics = step_fn(state, ok, x, noise_key, hparams)
      history.append(metrics)
    return state._replace(key=next_key), jax.tree.map(
      lambda *v: jnp.stack(v), *history
    )

  return epoch_fn


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--form", choices=FORMS, default="epoch")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--compilation_cache",
    default="",
    help="JAX persistent compilation cache folder ('' = off)",
  )
  args = parser.parse_args(argv)
  if args.compilation_cache:
    cli.enable_compilation_cache(args.compilation_cache)
  imported = time.time()

  config = default.get_config()
  config.batch_size, config.seed = args.batch_size, args.seed
  config.num_epochs = args.epochs
  if args.form == "epoch":
    # The engine's path: a group of one member on one device.
    built = group.Group.build(
      [member.Member(config)], mesh=program.make_mesh(jax.devices()[:1])
    )
    _emit(
      "ready",
      import_seconds=imported - _START,
      group_seconds=time.time() - imported,
    )
    dataset, steps, parts = built.dataset, built.steps, built.parts
    state, hparams, raw_train = built.state, built.hparams, built.raw_train
    epoch_fn = program.make_epoch(
      parts.graphdef,
      parts.optimizer,
      built.mesh,
      batch_size=config.batch_size,
      protocol=dataset.protocol,
      levels=dataset.levels,
    )
  else:
    dataset = data.load(config.source, config.protocol)
    raw_train = jax.device_put(dataset.train)
    _emit(
      "ready",
      import_seconds=imported - _START,
      data_seconds=time.time() - imported,
    )
    steps = member.steps_per_epoch(config, len(dataset.train))
    parts = member.build(config, dataset.image_shape, steps)
    state, hparams = parts.state, parts.hparams
    epoch_fn = _step_epoch(parts, dataset, config.batch_size)

  for epoch in range(1, args.epochs + 1):
    t0 = time.perf_counter()
    state, metrics = epoch_fn(state, raw_train, hparams)
    loss = float(jnp.mean(metrics["loss"]))  # waits for the epoch
    seconds = time.perf_counter() - t0
    examples = steps * config.batch_size
    _emit(
      "epoch",
      epoch=epoch,
      seconds=seconds,
      examples=examples,
      examples_per_second=examples / seconds,
      train_loss=loss,
    )

  @jax.jit
  def test_elbo(params, images, key):
    encode, log_likelihood = program.model_functions(
      parts.graphdef, params, None
    )
    return jnp.mean(
      evaluation.elbo_terms(encode, log_likelihood, images, key)["elbo"]
    )

  if args.form == "epoch":
    state, test_images = program.take(state.train, 0), built.test_images
  else:
    test_images = data.evaluation_images(dataset, config.eval_seed)
  _emit(
    "done",
    test_elbo=float(
      test_elbo(state.params, test_images, jax.random.key(config.eval_seed))
    ),
  )


if __name__ == "__main__":
  sys.exit(main())
