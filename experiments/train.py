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

from absl import app

from experiments import cli
import vae_jax.train

_CONFIG, _WORKDIR, _CACHE = cli.define_common(
  "default.py", "Run", "runs/default", "Where outputs and checkpoints go."
)


def main(argv):
  config = cli.start(argv, _CONFIG, _CACHE)
  result = cli.guarded(
    lambda: vae_jax.train.train_and_evaluate(config, _WORKDIR.value),
    _WORKDIR.value,
  )
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
