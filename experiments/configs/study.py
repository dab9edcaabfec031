"""The reconstruction-term study: one model, ten decoders, the same digits.

  python -m experiments.study                                  # ~13 min, 2 CPU cores
  python -m experiments.study --config=experiments/configs/study.py:long
  python -m experiments.study --config=experiments/configs/study.py:mnist \
      --workdir=runs/study-mnist --report=runs/study-mnist/study.md  # ~2.6 h

Every arm (``vae_jax.sweep.study.ARMS``) is the default model (MLP 784-400-20, Adam 1e-3, batch 128) on
mnist5k with one decoder p(x|z); each arm is a sweep over ``seeds`` (one
compiled program per arm; ``seeds_by_arm`` gives the costly discretized
logistics one seed), the fixed-sigma^2 arm also over
``fixed_sigma2``. ``long`` trains 3x longer and evaluates the NLL with 5000
samples (as a single run does); ``mnist`` runs the same rows on full MNIST
(60,000 / 10,000 images; its time is an estimate, not a measurement: the
default's training seconds in docs/study.md x 15 and its evaluation seconds
x 10). Override any key, e.g.
``--config.seeds='(0, 1)'``, ``--config.base.num_epochs=20`` or
``--config.seeds_by_arm.discretized_logistic='(0, 1, 2)'``.
"""

import ml_collections

from experiments.configs import default
from vae_jax.sweep import study


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in ("", "long", "mnist"):
    raise ValueError(
      f"study config variant must be '', 'long' or 'mnist', got {variant!r}"
    )
  c = ml_collections.ConfigDict()
  c.base = default.get_config()
  c.base.num_epochs = 50
  c.base.eval_every = 25
  c.base.checkpoint_every = 25
  c.base.nll_samples = 500  # a single run's 5000 in the long study
  c.base.nll_chunk_size = 500
  # The start of a learned sigma^2 (the fixed one is the axis below): about
  # the digits' pixel variance (0.095 on mnist5k's training images), the
  # maximum-likelihood sigma^2 of a decoder that outputs one grey level.
  # The Laplace's scale b starts there too.
  c.base.sigma2 = 0.1
  # The mixture's output is 3n numbers per pixel: its last layer, and so its
  # arm, costs about n times the others'. Three components and, for the two
  # discretized logistics, one seed keep those two arms' share small (the
  # whole study: docs/study.md states its measured time).
  c.base.mixture_components = 3
  c.seeds = (0, 1, 2)
  c.seeds_by_arm = ml_collections.ConfigDict(
    dict(discretized_logistic=(0,), discretized_logistic_mixture=(0,))
  )
  c.fixed_sigma2 = (0.001, 0.01, 0.1, 1.0)
  # Which arms run, in the table's order (names in vae_jax.sweep.study.ARMS).
  c.arms = tuple(study.ARMS)
  if variant == "long":
    c.base.num_epochs = 150
    c.base.eval_every = 25
    c.base.checkpoint_every = 25
    c.base.nll_samples = 5000
  if variant == "mnist":
    c.base.source = "mnist"  # MNIST's own 60,000 / 10,000
  return c
