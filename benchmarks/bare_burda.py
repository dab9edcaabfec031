"""The floor at Burda et al. (2016)'s sizes: their model in bare JAX, nothing else.

  python -m benchmarks.bare_burda --objective iwae --samples 5 \\
      --examples 6000 --epochs 5

The job of ``experiments/configs/burda2016.py`` as plain matrices: a tanh
MLP encoder 784-200-200-(50 + 50) to the posterior's mean and log sigma
(sigma = exp(linear)), a tanh MLP decoder 50-200-200-784 to Bernoulli
logits, batch 20, and one epoch a ``lax.scan`` over device-resident batches
of the first ``--examples`` training images of full MNIST. Each step draws
what vae_jax's epoch draws from the same keys (the batches, the
binarization with ``vae_jax.prng.bernoulli``, the noise ``normal(key, [B, k,
L])``) and minimises one of vae_jax's two k-sample losses, in nats per
example:

* ``elbo``: mean_i [(1/k) sum_k -log p(x_i | z_ik) + KL_i] (closed-form KL);
* ``iwae``: -mean_i log (1/k) sum_k w_ik, log w = log p(x | z) + log p(z) -
  log q(z | x).

Adam is optax's (rate 1e-3, b1 0.99, b2 0.999, eps 1e-4): per step the same
elementwise work as vae_jax's ``burda2016_adam``, though not its numbers.
No Flax modules, no metrics but the loss, no finiteness check, no schedule.

Same JSON-lines protocol as ``bare_jax.py`` (``ready``, ``epoch``, ``done``).
"""

import argparse
import math
import sys

import jax
import jax.numpy as jnp
import optax

from benchmarks import bare_jax
from vae_jax import prng
from vae_jax.train import data

PIXELS, HIDDEN, LATENT, BATCH = 784, (200, 200), 50, 20
OBJECTIVES = ("elbo", "iwae")


def init_params(key) -> tuple[list, list]:
  """(encoder, decoder) layers as ``(kernel [in, out], bias [out])``."""
  enc_key, dec_key = jax.random.split(key)
  return (
    bare_jax._init(enc_key, (PIXELS, *HIDDEN, 2 * LATENT)),
    bare_jax._init(dec_key, (LATENT, *HIDDEN[::-1], PIXELS)),
  )


def from_vae_jax(params: dict) -> tuple[list, list]:
  """vae_jax's MLP parameters (``nnx`` pure dict) in this file's layout."""

  def layers(mlp):
    return [(l["kernel"], l["bias"]) for _, l in sorted(mlp["layers"].items())]

  return layers(params["encoder"]), layers(params["decoder"])


def _mlp(params, h):
  for i, (w, b) in enumerate(params):
    h = h @ w + b
    if i < len(params) - 1:
      h = jnp.tanh(h)
  return h


def loss(params, x, eps, objective: str):
  """The batch loss, nats per example.

  Args:
    params: ``(encoder, decoder)`` layers (:func:`init_params`).
    x: ``[B, 784]`` binary pixels.
    eps: ``[B, k, 50]`` standard normal noise.
    objective: ``"elbo"`` or ``"iwae"`` (the module doc).
  """
  enc, dec = params
  h = _mlp(enc, x)
  mean, log_var = h[:, :LATENT], 2 * h[:, LATENT:]
  z = mean[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps
  log_lik = bare_jax._textbook_log_lik(x[:, None], _mlp(dec, z))  # [B, k]
  if objective == "iwae":
    # log p(z) - log q(z | x), with (z - mean)^2 / var = eps^2.
    log_w = log_lik + 0.5 * jnp.sum(eps**2 - z**2 + log_var[:, None], -1)
    k = eps.shape[1]
    return -jnp.mean(jax.nn.logsumexp(log_w, axis=1) - math.log(k))
  kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1 - log_var, axis=-1)
  return jnp.mean(kl - jnp.mean(log_lik, axis=1))


def make_epoch(objective: str, samples: int, batch_size: int, optimizer):
  """A jitted ``(params, opt_state, raw [N, 784] uint8, key) -> (params,
  opt_state, key, losses [S])``, the batches and draws of
  ``vae_jax.train.training.train_epoch``."""

  def batch_loss(params, raw_batch, key):
    data_key, noise_key = jax.random.split(key)
    x = prng.bernoulli(data_key, raw_batch.astype(jnp.float32) / 255.0)
    eps = jax.random.normal(
      noise_key, (batch_size, samples, LATENT), jnp.float32
    )
    return loss(params, x.astype(jnp.float32), eps, objective)

  return bare_jax.scan_epoch(batch_loss, batch_size, optimizer)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--objective", choices=OBJECTIVES, default="elbo")
  parser.add_argument("--samples", type=int, default=1)
  parser.add_argument("--examples", type=int, default=6000)
  parser.add_argument("--batch_size", type=int, default=BATCH)
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  train = data.load("mnist", "dynamic").train[: args.examples]
  raw = jax.device_put(train.reshape(len(train), -1))
  bare_jax._emit("ready")
  key, init_key = jax.random.split(jax.random.key(args.seed))
  params = init_params(init_key)
  optimizer = optax.adam(1e-3, b1=0.99, b2=0.999, eps=1e-4)
  opt_state = optimizer.init(params)
  epoch = make_epoch(args.objective, args.samples, args.batch_size, optimizer)
  bare_jax.run_epochs(
    epoch, params, opt_state, raw, key, args.epochs, args.batch_size
  )


if __name__ == "__main__":
  sys.exit(main())
