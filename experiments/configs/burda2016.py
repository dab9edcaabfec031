"""Burda, Grosse & Salakhutdinov (2016), 1-stochastic-layer VAE, k = 1.

Full MNIST, dynamically binarized; 784-200-200-50 with tanh units; Adam with
beta1 = 0.9, beta2 = 0.999, eps = 1e-4, batch 20, 3,280 epochs over the
learning rates 1e-3 * 10^(-i/7), i = 0..7 for 3^i epochs each; test NLL by
importance sampling with k = 5,000. Their Table 1 reports 86.76 nats for this
model; that figure is quoted from the paper, not reproduced here (it needs
``tfds:mnist`` prepared and days of CPU, or hours of GPU).
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.source = "tfds:mnist"
  c.protocol = "dynamic"
  c.hidden_sizes = (200, 200)
  c.activation = "tanh"
  c.latent_dim = 50
  c.batch_size = 20
  c.num_epochs = 3280
  c.lr_schedule = "burda"
  c.adam_eps = 1e-4
  c.eval_every = 100
  c.checkpoint_every = 10
  return c
