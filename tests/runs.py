"""Tiny runs on the 8x8 digits that the end-to-end tests share."""

import ml_collections

from experiments.configs import default
from vae_jax.train import experiment


def tiny_config(**changes) -> ml_collections.ConfigDict:
  """The default config on the digits: seconds per run."""
  c = default.get_config()
  c.update(
    dict(
      source="digits",
      hidden_sizes=(32,),
      latent_dim=2,
      batch_size=100,
      num_epochs=4,
      eval_every=2,
      checkpoint_every=1,
      nll_samples=64,
      nll_chunk_size=16,
      eval_batch_size=128,
      progress_bar=False,
    )
  )
  c.update(changes)
  return c


def train(config, workdir) -> dict:
  """A run's summary, as summary.json holds it."""
  return experiment.train_and_evaluate(config, str(workdir)).to_dict()
