"""A short tour of vae_jax's losses.

Run: .venv/bin/python -m experiments.demo
"""

import math

import jax
import jax.numpy as jnp

import vae_jax


def _naive_bernoulli(x, logits):
  p = jax.nn.sigmoid(logits)
  return jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log(1 - p))


def main():
  key_x, key_l, key_m, key_v = jax.random.split(jax.random.key(0), 4)
  batch, pixels, latent = 128, 784, 20
  x = (jax.random.uniform(key_x, (batch, pixels)) < 0.13).astype(jnp.float32)
  logits = 4.0 * jax.random.normal(key_l, (batch, pixels))
  mean = jax.random.normal(key_m, (batch, latent))
  log_var = -2.0 + jax.random.normal(key_v, (batch, latent))

  print(
    "1. Bernoulli log-likelihood (nats/example), logits scaled up, float32:"
  )
  print(f"   {'scale':>6} {'vae_jax':>14} {'naive log(sigmoid)':>20}")
  for scale in (1.0, 30.0, 1e3 / 4):
    ours = vae_jax.batched(vae_jax.bernoulli_log_likelihood)(x, scale * logits)
    naive = jnp.mean(jax.vmap(_naive_bernoulli)(x, scale * logits))
    print(f"   {scale:6.0f} {float(ours):14.2f} {float(naive):20.2f}")

  print("\n2. Negative ELBO (nats/example, batch mean), beta = 1:")
  for name, out in (
    ("bernoulli", logits),
    ("continuous_bernoulli", logits),
    ("gaussian", jax.nn.sigmoid(logits)),
  ):
    loss = vae_jax.batched(vae_jax.negative_elbo)(
      x,
      out,
      mean,
      log_var,
      likelihood=name,
      **({"sigma2": 0.1} if name == "gaussian" else {}),
    )
    print(f"   {name:22s} {float(loss):10.2f}")

  print("\n3. Gaussian decoder, same reconstruction, different sigma2:")
  recon = jax.nn.sigmoid(logits)
  sse = float(jnp.mean(jnp.sum((recon - x) ** 2, axis=1)))
  for sigma2 in (0.5, 0.1, float(vae_jax.optimal_sigma2_batch(x, recon))):
    nll = -vae_jax.batched(vae_jax.gaussian_log_likelihood)(
      x, recon, sigma2=sigma2
    )
    const = pixels / 2 * math.log(2 * math.pi * sigma2)
    print(
      f"   sigma2={sigma2:.4f}  NLL={float(nll):9.2f}  = SSE/(2 sigma2) {sse / (2 * sigma2):8.2f}"
      f" + const {const:8.2f};  same optimum as SSE + {2 * sigma2:.3f} beta KL"
    )

  nll = 86.76
  print(
    f"\n4. {nll} nats on 28x28 MNIST = {float(vae_jax.nats_to_bits_per_dim(nll, 784)):.4f} bits/dim"
  )


if __name__ == "__main__":
  main()
