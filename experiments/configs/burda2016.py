"""Burda, Grosse & Salakhutdinov (2016), Table 1: one stochastic layer on MNIST.

One config per row: ``burda2016.py:vae1`` (the default), ``:vae5``,
``:vae50``, ``:iwae5``, ``:iwae50`` (:data:`ROWS`). All follow the paper's
code (yburda/iwae) where it is more specific than the paper: full MNIST,
dynamically binarized, trained on the first 59,600 training images (the last
400 held out, the split unshuffled); 784-200-200-50 with tanh units,
Glorot-uniform weights, the decoder's output bias at the logit of the
clipped mean training image, the encoder's sigma = exp(linear); batch 20;
their Adam (beta1 = 0.99, beta2 = 0.999, eps = 1e-4 on the batch-sum
gradient, second moment starting at one; ``training.burda2016_adam``);
3,280 epochs over the rates 1e-3 ... 1e-4 for 3^i epochs, i = 0..7; test NLL
by importance sampling with k = 5,000. ``python -m experiments.burda``
trains the rows and writes docs/burda2016.md (what still differs is listed
there).
"""

from experiments.configs import default

# Row -> (objective, k samples per example in training), Table 1's order.
ROWS = {
  "vae1": ("elbo", 1),
  "vae5": ("elbo", 5),
  "vae50": ("elbo", 50),
  "iwae5": ("iwae", 5),
  "iwae50": ("iwae", 50),
}


def get_config(row: str = "vae1"):
  if row not in ROWS:
    raise ValueError(f"row must be one of {tuple(ROWS)}, got {row!r}")
  c = default.get_config()
  c.source = "mnist"
  c.protocol = "dynamic"
  c.train_examples = 59_600
  c.hidden_sizes = (200, 200)
  c.activation = "tanh"
  c.latent_dim = 50
  c.init = "glorot"
  c.output_bias = "data_mean"
  c.encoder_variance = "log_std"
  c.objective, c.train_samples = ROWS[row]
  c.batch_size = 20
  c.num_epochs = 3280
  c.learning_rate = 1e-3
  c.lr_schedule = "burda"
  c.adam_variant = "burda2016"
  c.adam_b1 = 0.99
  c.adam_b2 = 0.999
  c.adam_eps = 1e-4
  c.nll_samples = 5000
  c.eval_every = 100
  c.checkpoint_every = 10
  return c
