"""vae_jax at Burda et al. (2016)'s sizes: the epoch the engine runs for a run.

  python -m benchmarks.jax_burda --row iwae5 --examples 6000 --epochs 5

A row of ``experiments/configs/burda2016.py`` (784-200-200-50 tanh, batch 20,
Bernoulli decoder, dynamic binarization, ``burda2016_adam`` and the ``burda``
schedule), its training set cut to the first ``--examples`` images of full
MNIST (``config.train_examples``), trained as ``vae_jax.train.engine`` trains
a single run: a ``group.Group`` of one member on one device, its epoch
``program.make_epoch(..., objective=parts.objective)`` (a single run's
unchecked ``lax.scan``, ``training.unchecked_epoch``), and one host copy of
the epoch's metrics (``program.gather``), as the engine's epoch loop makes.
No evaluation, logs or checkpoints.

Same JSON-lines protocol as ``jax_vae.py`` (``ready`` after
``Group.build``, ``epoch``, ``done``).
"""

import argparse
import sys
import time

import jax
import numpy as np

from benchmarks import jax_vae
from experiments.configs import burda2016
from vae_jax.train import group
from vae_jax.train import member
from vae_jax.train import program


def build(row: str, examples: int, seed: int = 0):
  """The row's single-run group on one device and its compiled epoch."""
  config = burda2016.get_config(row)
  config.train_examples, config.seed = examples, seed
  built = group.Group.build(
    [member.Member(config)], mesh=program.make_mesh(jax.devices()[:1])
  )
  parts = built.parts
  epoch_fn = program.make_epoch(
    parts.graphdef,
    parts.optimizer,
    built.mesh,
    batch_size=config.batch_size,
    protocol=built.dataset.protocol,
    levels=built.dataset.levels,
    objective=parts.objective,
  )
  return built, epoch_fn


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--row", choices=tuple(burda2016.ROWS), default="vae1")
  parser.add_argument("--examples", type=int, default=6000)
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  built, epoch_fn = build(args.row, args.examples, args.seed)
  jax_vae._emit("ready")
  state = built.state
  examples = built.steps * built.config.batch_size
  for epoch in range(1, args.epochs + 1):
    t0 = time.perf_counter()
    state, metrics = epoch_fn(state, built.raw_train, built.hparams)
    metrics, _ = program.gather((metrics, state.train.step))  # waits
    seconds = time.perf_counter() - t0
    jax_vae._emit(
      "epoch",
      epoch=epoch,
      seconds=seconds,
      examples=examples,
      examples_per_second=examples / seconds,
      train_loss=float(np.mean(metrics["loss"])),
    )
  jax_vae._emit("done", train_loss=float(np.mean(metrics["loss"])))


if __name__ == "__main__":
  sys.exit(main())
