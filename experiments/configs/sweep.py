"""A beta x sigma^2 sweep of Gaussian VAEs on mnist5k's grey levels.

Twelve members (4 beta x 3 sigma^2, one seed) train as one compiled program.
``get_config(base)`` takes the name of a training config in
``experiments/configs`` (default: ``default``), chosen on the command line as
``--config=experiments/configs/sweep.py:digits``. Override any key:
``--config.base.num_epochs=50``, ``--config.axes.beta='(0.5, 1.0)'``,
``--config.axes.seed='(0, 1, 2)'`` (the four axes here can be overridden so;
a sweep over other keys needs its own config file). Axes may name any
training key; those in
``vae_jax.sweep.VMAPPED`` (beta, sigma2, free_bits, free_bits_mode,
kl_warmup_epochs, seed)
share one program, others (likelihood, latent_dim, learning_rate, ...) split
the sweep into groups that run one after another.
"""

import importlib

import ml_collections


def get_config(base: str = "default") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.base = importlib.import_module(f"experiments.configs.{base}").get_config()
  # Gaussian decoder with a fixed sigma^2 on dequantized grey levels.
  c.base.protocol = "continuous"
  c.base.likelihood = "gaussian"
  c.base.sigma2_mode = "fixed"
  c.base.num_epochs = 30
  c.base.eval_every = 10
  c.base.checkpoint_every = 5
  # A cheaper NLL than a single run's 5000 samples: 12 members to evaluate.
  c.base.nll_samples = 200
  c.base.nll_chunk_size = 200
  c.mode = "grid"  # grid (every combination) | zip
  c.member_figures = False  # each member's figures, as a run's
  c.axes = ml_collections.ConfigDict()
  # Doubling beta and quadrupling sigma^2 put equal 2 sigma^2 beta products
  # on diagonals of the grid (0.02, 0.04, 0.08, 0.16 appear twice each).
  c.axes.beta = (0.25, 0.5, 1.0, 2.0)
  c.axes.sigma2 = (0.01, 0.04, 0.16)
  c.axes.seed = (0,)
  c.axes.likelihood = ("gaussian",)
  return c
