"""Default run: MLP 784-400-20 Bernoulli VAE on mnist5k, dynamic binarization.

Every knob of a run is here; override any on the command line, e.g.
``--config.beta=4 --config.latent_dim=2``. Unknown keys are refused.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Data: a source from vae_jax.data and its protocol.
  c.source = "mnist5k"  # mnist5k | digits | tfds:<name>
  c.protocol = "dynamic"  # dynamic | static | continuous | levels
  c.data_dir = ""  # tfds data_dir ("" = tfds default)
  c.train_examples = 0  # train on the first N training images (0 = all)
  # Model.
  c.architecture = "mlp"  # mlp | conv
  c.hidden_sizes = (400,)  # MLP widths, or the two conv channel counts
  c.activation = "relu"
  c.latent_dim = 20
  c.init = "lecun"  # lecun (Flax's default) | glorot (uniform; mlp only)
  c.output_bias = "zero"  # zero | data_mean (logit of the mean image; mlp)
  # The encoder's second output: log_variance | log_std (sigma = exp(it)).
  c.encoder_variance = "log_variance"
  # Likelihood p(x|z) and, for gaussian and laplace, how sigma^2 is set (a
  # Laplace reads the three sigma2 keys as its scale b; no optimal mode).
  # bernoulli | continuous_bernoulli | gaussian | laplace, and on protocol
  # levels only: discretized_logistic | discretized_logistic_mixture.
  c.likelihood = "bernoulli"
  c.sigma2_mode = "fixed"  # fixed | learned | per_pixel | optimal
  c.sigma2 = 1.0  # fixed value, or the start of learned ones
  c.min_sigma2 = 1e-4  # floor of learned and optimal sigma^2
  c.mixture_components = 5  # of discretized_logistic_mixture
  # Objective: loss = -log p(x|z) + beta_t * sum_j max(KL_j, free_bits).
  c.beta = 1.0
  c.kl_warmup_epochs = 0  # linear warm-up of beta over this many
  c.free_bits = 0.0  # nats per latent dimension (0 = none)
  # per_example: mean_i sum_j max(KL_ij, free_bits); batch (Kingma et al.
  # 2016): sum_j max(mean_i KL_ij, free_bits) over each minibatch.
  c.free_bits_mode = "per_example"
  # elbo: the mean of train_samples one-sample ELBO terms (k = 1: the loss
  # above); iwae: minus the IWAE bound of train_samples samples (beta 1, no
  # free bits, no warm-up), its gradient reparam or dreg (Tucker et al. 2019).
  c.objective = "elbo"  # elbo | iwae
  c.train_samples = 1  # k samples per example
  c.iwae_gradient = "reparam"  # reparam | dreg (iwae only)
  # Optimisation.
  c.seed = 0
  c.batch_size = 128
  c.num_epochs = 100
  c.learning_rate = 1e-3
  c.lr_schedule = "constant"  # constant | cosine | burda
  c.adam_eps = 1e-8
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_variant = "standard"  # standard (optax) | burda2016 (their code's)
  c.grad_clip = 0.0  # global-norm clip; 0 = none
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
