"""Default run: MLP 784-400-20 Bernoulli VAE on mnist5k, dynamic binarization.

Every knob of a run is here; override any on the command line, e.g.
``--config.beta=4 --config.latent_dim=2``. Unknown keys are refused.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Data: a source from vae_jax.data and its protocol.
  c.source = "mnist5k"  # mnist5k | digits | tfds:<name>
  c.protocol = "dynamic"  # dynamic | static | continuous
  c.data_dir = ""  # tfds data_dir ("" = tfds default)
  # Model.
  c.architecture = "mlp"  # mlp | conv
  c.hidden_sizes = (400,)  # MLP widths, or the two conv channel counts
  c.activation = "relu"
  c.latent_dim = 20
  # Likelihood p(x|z) and, for gaussian, how sigma^2 is set.
  c.likelihood = "bernoulli"  # bernoulli | continuous_bernoulli | gaussian
  c.sigma2_mode = "fixed"  # fixed | learned | per_pixel | optimal
  c.sigma2 = 1.0  # fixed value, or the start of learned ones
  c.min_sigma2 = 1e-4  # floor of learned and optimal sigma^2
  # Objective: loss = -log p(x|z) + beta_t * sum_j max(KL_j, free_bits).
  c.beta = 1.0
  c.kl_warmup_epochs = 0  # linear warm-up of beta over this many
  c.free_bits = 0.0  # nats per latent dimension (0 = none)
  # per_example: mean_i sum_j max(KL_ij, free_bits); batch (Kingma et al.
  # 2016): sum_j max(mean_i KL_ij, free_bits) over each minibatch.
  c.free_bits_mode = "per_example"
  # Optimisation.
  c.seed = 0
  c.batch_size = 128
  c.num_epochs = 100
  c.learning_rate = 1e-3
  c.lr_schedule = "constant"  # constant | cosine | burda
  c.adam_eps = 1e-8
  c.grad_clip = 0.0  # global-norm clip; 0 = none
  c.scan_epoch = True  # whole epoch in one jit (False: per step)
  # Evaluation: the test ELBO every eval_every epochs, and at the end the
  # importance-weighted NLL with nll_samples samples (Burda et al. 2016).
  c.eval_every = 10
  c.nll_samples = 5000
  c.nll_chunk_size = 500
  c.eval_batch_size = 100
  c.eval_seed = 0  # fixes the test set's binarization
  # Outputs.
  c.checkpoint_every = 10  # epochs; the last epoch is always saved
  c.progress_bar = True
  return c
