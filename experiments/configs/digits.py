"""A tiny run on scikit-learn's 8x8 digits: seconds on a laptop, for trying."""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.source = "digits"
  c.hidden_sizes = (128,)
  c.latent_dim = 8
  c.batch_size = 64
  c.num_epochs = 50
  c.nll_samples = 1000
  return c
