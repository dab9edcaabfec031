"""Speed must not change results: the optimised training path against a plain
one written here from the textbook.

The optimised path is what ``experiments/train.py`` runs: a whole epoch in one
``lax.scan`` (``training.train_epoch``), binarization noise from
``vae_jax.prng`` (jax.random's stream in one fused loop), the Bernoulli
log-likelihood with its hand-written derivatives, optax's Adam. The plain
path: one step at a time from Python, ``jax.random.bernoulli`` itself,
explicit matrix products, ``jax.nn.log_sigmoid`` differentiated by autodiff,
the closed-form KL, and Adam written out (Kingma & Ba, 2015, Algorithm 1).
Both see the same initial parameters, batches and keys.
"""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import default
from vae_jax.train import program
from vae_jax.train import member as member_lib
import pytest

# End to end: every test here trains models (deselect with -m 'not slow').
pytestmark = pytest.mark.slow

LATENT = 20
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def _layers(params):
  enc, dec = params["encoder"]["layers"], params["decoder"]["layers"]
  return [(l["kernel"], l["bias"]) for l in (enc[0], enc[1], dec[0], dec[1])]


def plain_loss(params, x, eps):
  """Mean over the batch of -log p(x|z) + KL(q(z|x) || N(0, I)), in nats."""
  (w1, b1), (w2, b2), (w3, b3), (w4, b4) = _layers(params)
  x = x.reshape(x.shape[0], -1)
  out = jnp.maximum(x @ w1 + b1, 0) @ w2 + b2
  mean, log_var = out[:, :LATENT], out[:, LATENT:]
  z = mean + jnp.exp(0.5 * log_var) * eps
  logits = jnp.maximum(z @ w3 + b3, 0) @ w4 + b4
  log_lik = jnp.sum(
    x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits),
    axis=1,
  )
  kl = 0.5 * jnp.sum(mean**2 + jnp.exp(log_var) - 1 - log_var, axis=1)
  return jnp.mean(kl - log_lik)


@jax.jit
def plain_step(params, m, v, t, x, eps):
  loss, g = jax.value_and_grad(plain_loss)(params, x, eps)
  m = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * g, m, g)
  v = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * g * g, v, g)
  m_hat = jax.tree.map(lambda m: m / (1 - B1**t), m)
  v_hat = jax.tree.map(lambda v: v / (1 - B2**t), v)
  params = jax.tree.map(
    lambda p, m, v: p - LR * m / (jnp.sqrt(v) + EPS), params, m_hat, v_hat
  )
  return params, m, v, loss


def plain_epoch(params, m, v, t, key, raw, batch_size):
  """The epoch's order and keys derived by hand from the state's key, then
  one plain step per batch."""
  _, order_key, step_key = jax.random.split(key, 3)
  perm = np.asarray(jax.random.permutation(order_key, raw.shape[0]))
  steps = raw.shape[0] // batch_size
  losses = []
  for s, k in enumerate(jax.random.split(step_key, steps)):
    idx = perm[s * batch_size : (s + 1) * batch_size]
    data_key, noise_key = jax.random.split(k)
    p = jnp.asarray(raw[idx], jnp.float32) / 255
    x = jax.random.bernoulli(data_key, p).astype(jnp.float32)
    eps = jax.random.normal(noise_key, (batch_size, LATENT), jnp.float32)
    t += 1
    params, m, v, loss = plain_step(params, m, v, t, x, eps)
    losses.append(float(loss))
  return params, m, v, t, np.asarray(losses)


class ReferenceStepTest(absltest.TestCase):
  def test_optimised_epochs_equal_plain_steps(self):
    config = default.get_config()  # MLP 784-400-20, Bernoulli, Adam 1e-3
    config.batch_size = 64
    raw = np.random.default_rng(0).integers(
      0, 256, (64 * 6 + 5, 28, 28, 1), dtype=np.uint8
    )
    steps = raw.shape[0] // config.batch_size
    # The engine's path: a run is a group of one member on one device.
    head = member_lib.build(config, (28, 28, 1), steps)
    group = program.initial_state([head.state])
    hparams = program.stack([head.hparams])
    epoch = program.make_epoch(
      head.graphdef,
      head.optimizer,
      program.make_mesh(jax.devices()[:1]),
      batch_size=config.batch_size,
      protocol="dynamic",
      levels=256,
    )

    params = jax.tree.map(jnp.copy, head.state.params)
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    t, key = 0, head.state.key
    for _ in range(3):
      params, m, v, t, plain_losses = plain_epoch(
        params, m, v, t, key, raw, config.batch_size
      )
      key = jax.random.split(key, 3)[0]
      group, metrics = epoch(group, jnp.asarray(raw), hparams)
      state = program.take(group.train, 0)
      # Float32 rounding apart (summation order, the hand-written
      # derivative): losses to 1e-5 and 99.99% of all the parameters to 1e-6
      # of their tensor's scale (measured: <= 3e-7). Adam amplifies rounding
      # where a gradient is ~0 (m / sqrt(v) of noise), so a handful of
      # entries (2 of 640k here; on another CPU one of the decoder's 784
      # output biases) may differ by up to one step's size, lr, per step
      # taken: the share is counted over all 640k parameters, not per tensor.
      np.testing.assert_allclose(metrics["loss"][0], plain_losses, rtol=1e-5)
      close, total = 0, 0
      for ours, plain in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(params)
      ):
        diff = np.abs(np.asarray(ours) - np.asarray(plain))
        scale = float(jnp.abs(plain).max())
        close += int(np.sum(diff <= 1e-6 * scale))
        total += diff.size
        self.assertLessEqual(diff.max(), LR * t)
      self.assertGreaterEqual(close / total, 0.9999)
    self.assertEqual(int(state.step), t)
    # The loop really trained: parameters moved far beyond the tolerance.
    start = jax.tree.leaves(
      member_lib.build(config, (28, 28, 1), steps).state.params
    )
    moved = max(
      float(jnp.abs(a - b).max())
      for a, b in zip(start, jax.tree.leaves(params))
    )
    self.assertGreater(moved, 1e-2)


if __name__ == "__main__":
  absltest.main()
