"""The floor: the same job as ``jax_vae.py`` in bare JAX, nothing else.

  python -m benchmarks.bare_jax --form fused --batch_size 128 --epochs 10

The default model (MLP 784-400-20 with ReLU, Bernoulli decoder, analytic
KL, Adam 1e-3 from optax, batch 128, a fresh permutation each epoch) as
plain matrices, one epoch a ``lax.scan`` over device-resident batches: no
Flax modules, no metrics but the loss, no non-finite checks, no
checkpoints. Three forms differ only in the data noise:

* ``none``: the grey levels / 255 as soft targets (no binarization);
* ``stock``: each batch binarized with ``jax.random.bernoulli``;
* ``fused``: each batch binarized with ``vae_jax.prng.bernoulli`` (the same
  draws, bit for bit, with the Threefry rounds written out): the
  binarization vae_jax's epoch uses;
* ``kernels``: ``fused`` with the rest of vae_jax's numerical kernels too:
  the step's keys split with ``vae_jax.prng.split`` and the likelihood
  ``vae_jax.bernoulli_log_likelihood`` (one exp and one log1p per pixel, a
  custom JVP) in place of two ``jax.nn.log_sigmoid`` and their autodiff.
  The same draws and the same loss up to rounding; what is left between
  it and vae_jax's epoch is the engine (Flax NNX, metrics, the finiteness
  check), so this is the engine's floor.

Same JSON-lines protocol as ``jax_vae.py`` (``ready``, ``epoch``, ``done``).
"""

import time

_START = time.time()  # before the imports: they are part of start-up

import argparse
import functools
import json
import sys

import jax
import jax.numpy as jnp
import optax

import vae_jax
from vae_jax import prng
from vae_jax.train import data

FORMS = ("none", "stock", "fused", "kernels")
HIDDEN, LATENT = 400, 20


def _emit(event: str, **fields) -> None:
  print(json.dumps(dict(event=event, time=time.time(), **fields)), flush=True)


def _init(key, sizes):
  params = []
  for k, (a, b) in zip(
    jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])
  ):
    bound = 1 / jnp.sqrt(a)
    params.append(
      (
        jax.random.uniform(k, (a, b), jnp.float32, -bound, bound),
        jnp.zeros(b, jnp.float32),
      )
    )
  return params


def _mlp(params, h):
  for i, (w, b) in enumerate(params):
    h = h @ w + b
    if i < len(params) - 1:
      h = jax.nn.relu(h)
  return h


def _textbook_log_lik(x, logits):
  return jnp.sum(
    x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits),
    axis=-1,
  )


def _loss(params, x, key, log_lik_fn=_textbook_log_lik):
  enc, dec = params
  h = _mlp(enc, x)
  mean, log_var = h[:, :LATENT], h[:, LATENT:]
  z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
  logits = _mlp(dec, z)
  log_lik = log_lik_fn(x, logits)
  kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1 - log_var, axis=-1)
  return jnp.mean(kl - log_lik)


def make_epoch(form: str, batch_size: int, optimizer):
  def inputs(raw, key):
    x = raw.astype(jnp.float32) / 255.0
    if form == "stock":
      x = jax.random.bernoulli(key, x).astype(jnp.float32)
    elif form in ("fused", "kernels"):
      x = prng.bernoulli(key, x).astype(jnp.float32)
    return x

  if form == "kernels":
    split = prng.split
    log_lik_fn = jax.vmap(vae_jax.bernoulli_log_likelihood)
  else:
    split, log_lik_fn = jax.random.split, _textbook_log_lik
  loss_fn = functools.partial(_loss, log_lik_fn=log_lik_fn)

  def batch_loss(params, raw_batch, key):
    data_key, noise_key = split(key)
    return loss_fn(params, inputs(raw_batch, data_key), noise_key)

  return scan_epoch(batch_loss, batch_size, optimizer)


def scan_epoch(batch_loss, batch_size: int, optimizer):
  """A jitted ``(params, opt_state, raw [N, ...], key) -> (params, opt_state,
  key, losses [S])``: a fresh permutation, then one ``lax.scan`` over the
  S = N // batch_size batches, each step ``batch_loss(params, raw[batch],
  step_key)`` and its Adam update."""

  @jax.jit
  def epoch(params, opt_state, raw, key):
    key, order_key, step_key = jax.random.split(key, 3)
    steps = raw.shape[0] // batch_size
    idx = jax.random.permutation(order_key, raw.shape[0])
    idx = idx[: steps * batch_size].reshape(steps, batch_size)

    def step(carry, inp):
      params, opt_state = carry
      i, k = inp
      loss, grads = jax.value_and_grad(batch_loss)(params, raw[i], k)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(
      step, (params, opt_state), (idx, jax.random.split(step_key, steps))
    )
    return params, opt_state, key, losses

  return epoch


def run_epochs(
  epoch, params, opt_state, raw, key, epochs: int, batch_size: int
):
  """Runs ``epochs`` epochs, emitting an ``epoch`` line after each (the
  examples/s of that epoch) and ``done`` at the end."""
  examples = raw.shape[0] // batch_size * batch_size
  for e in range(1, epochs + 1):
    t0 = time.perf_counter()
    params, opt_state, key, losses = epoch(params, opt_state, raw, key)
    loss = float(jnp.mean(losses))  # waits for the epoch
    seconds = time.perf_counter() - t0
    _emit(
      "epoch",
      epoch=e,
      seconds=seconds,
      examples=examples,
      examples_per_second=examples / seconds,
      train_loss=loss,
    )
  _emit("done", train_loss=loss)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--form", choices=FORMS, default="fused")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  imported = time.time()
  dataset = data.load("mnist5k", "dynamic")
  raw = jax.device_put(dataset.train.reshape(len(dataset.train), -1))
  _emit(
    "ready",
    import_seconds=imported - _START,
    data_seconds=time.time() - imported,
  )
  key, enc_key, dec_key = jax.random.split(jax.random.key(args.seed), 3)
  params = (
    _init(enc_key, (784, HIDDEN, 2 * LATENT)),
    _init(dec_key, (LATENT, HIDDEN, 784)),
  )
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)
  epoch = make_epoch(args.form, args.batch_size, optimizer)
  run_epochs(epoch, params, opt_state, raw, key, args.epochs, args.batch_size)


if __name__ == "__main__":
  sys.exit(main())
