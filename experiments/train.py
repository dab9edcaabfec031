"""Train and evaluate one VAE: ``python -m experiments.train``.

  python -m experiments.train --workdir=runs/default
  python -m experiments.train --config=experiments/configs/digits.py \\
      --config.beta=4 --workdir=runs/digits-beta4

Re-running the same command resumes from the newest checkpoint in --workdir.
The JAX compilation cache (--compilation_cache, "" to disable) makes a second
start fast.
"""

import os
import sys

if __package__ in (
  None,
  "",
):  # run by path: python path/to/experiments/train.py
  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging

from experiments import cli
import vae_jax.train

_CONFIG = cli.define_config(
  "config", cli.config_path("default.py"), "Run config (a .py file)."
)
_WORKDIR = flags.DEFINE_string(
  "workdir", "runs/default", "Where outputs and checkpoints go."
)
_CACHE = flags.DEFINE_string(
  "compilation_cache",
  cli.default_cache_dir(),
  "JAX persistent compilation cache folder ('' = off).",
)


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  config = cli.config_value(_CONFIG)
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _CACHE.value:
    cli.enable_compilation_cache(_CACHE.value)
  try:
    result = vae_jax.train.train_and_evaluate(config, _WORKDIR.value)
  except cli.USER_ERRORS as e:
    cli.fail(str(e), code=1)
  except KeyboardInterrupt:
    cli.interrupted(_WORKDIR.value)
  workdir = os.path.abspath(_WORKDIR.value)
  print(f"\nOutputs in {workdir}:")
  for name in (
    "summary.json",
    "metrics.jsonl",
    "config.json",
    "checkpoints/",
    "tensorboard/",
    "figures/",
  ):
    print(f"  {os.path.join(workdir, name)}")
  keys = (
    "test_elbo",
    "test_rate",
    "test_distortion",
    "test_nll",
    "nll_samples",
    "bits_per_dim",
    "active_units",
    "data_protocol",
    "train_seconds",
    "examples_per_second",
  )
  print("Summary (nats per example):")
  for k in keys:
    v = getattr(result, k)
    print(f"  {k:>20}: {v:.4f}" if isinstance(v, float) else f"  {k:>20}: {v}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
