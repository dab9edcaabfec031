"""The JAX side of the PyTorch comparison: the same job as ``torch_vae.py``.

  python -m benchmarks.jax_vae --form epoch --batch_size 128 --epochs 10

Trains the default model (MLP 784-400-20, Bernoulli decoder, dynamic
binarization, Adam 1e-3) on mnist5k with vae_jax's own functions, then
reports the single-sample test ELBO, exactly as ``benchmarks/torch_vae.py``
does in PyTorch. Two forms:

* ``epoch``: a whole epoch in one jitted program (``program.make_epoch`` of
  a group of one member: ``training.train_epoch``, a ``lax.scan`` over the
  steps), the path ``experiments/train.py`` takes;
* ``step``: one jitted ``training.train_step`` called from Python per batch
  (``scan_epoch=False``).

Prints one JSON object per line, the protocol ``benchmarks/compare.py``
reads: ``ready`` (after imports and data), ``epoch`` (one per epoch; the
device is synchronised before the clock is read), ``done`` (test ELBO), each
with ``time`` = ``time.time()``. ``--compilation_cache DIR`` turns on JAX's
persistent compilation cache (what "warm start" means in the results).
"""

import time

_START = time.time()  # pylint: disable=g-import-not-at-top

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
from vae_jax.train import program
from vae_jax.train import setup
from vae_jax.train import training

FORMS = ("epoch", "step")


def _emit(event: str, **fields) -> None:
  print(json.dumps(dict(event=event, time=time.time(), **fields)), flush=True)


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
  dataset = data.load(config.source, config.protocol)
  raw_train = jax.device_put(dataset.train)
  _emit(
    "ready",
    import_seconds=imported - _START,
    data_seconds=time.time() - imported,
  )

  steps = len(dataset.train) // config.batch_size
  member = setup.build(config, dataset.image_shape, steps)
  graphdef, optimizer = member.graphdef, member.optimizer
  state, hparams = member.state, member.hparams
  static = dict(
    batch_size=config.batch_size,
    protocol=dataset.protocol,
    levels=dataset.levels,
  )
  if args.form == "epoch":
    # The engine's path: a group of one member on one device.
    mesh = program.make_mesh(jax.devices()[:1])
    on_members = program.member_sharding(mesh)
    group_epoch = program.make_epoch(graphdef, optimizer, mesh, **static)
    state = program.place(program.initial_state([state]), on_members)
    hparams = program.place(program.stack([hparams]), on_members)
    raw_train = program.place(dataset.train, program.replicated(mesh))
    epoch_fn = group_epoch
  else:
    step_fn = jax.jit(
      functools.partial(training.train_step, graphdef, optimizer)
    )
    batch_fn = jax.jit(
      training.batch_inputs, static_argnames=("protocol", "levels")
    )

    def epoch_fn(state, raw_train, hparams):
      next_key, batches, keys = training.epoch_inputs(
        state.key, raw_train.shape[0], config.batch_size
      )
      history = []
      for idx, key in zip(batches, keys):
        x, noise_key = batch_fn(
          raw_train, idx, key, protocol=dataset.protocol, levels=dataset.levels
        )
        state, metrics = step_fn(state, x, noise_key, hparams)
        history.append(metrics)
      return state._replace(key=next_key), jax.tree.map(
        lambda *v: jnp.stack(v), *history
      )

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
    encode, log_likelihood = program.model_functions(graphdef, params, None)
    return jnp.mean(
      evaluation.elbo_terms(encode, log_likelihood, images, key)["elbo"]
    )

  if args.form == "epoch":
    state = program.member(state.train, 0)
  test_images = data.evaluation_images(dataset, config.eval_seed)
  _emit(
    "done",
    test_elbo=float(
      test_elbo(state.params, test_images, jax.random.key(config.eval_seed))
    ),
  )


if __name__ == "__main__":
  sys.exit(main())
