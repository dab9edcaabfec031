"""The Burda-size benchmark's contenders compute the same loss: vae_jax's
training loss, the bare JAX one and PyTorch's agree on the same parameters,
batch and noise (benchmarks/burda_speed.py times them side by side)."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bare_burda
from experiments.configs import burda2016
from vae_jax.train import member
from vae_jax.train import training

B, SHAPE = 8, (28, 28, 1)


@pytest.fixture(scope="module")
def setup():
  """vae_jax's Burda model (its structure; random parameters, biases too),
  a binary batch and a key."""
  config = burda2016.get_config("vae1")
  bias = np.zeros(SHAPE, np.float32)
  model = nnx.eval_shape(
    lambda: member.build_model(
      config, SHAPE, jax.random.key(0), output_bias=bias
    )
  )
  graphdef, abstract = nnx.split(model)
  rng = np.random.default_rng(0)

  def draw(leaf):
    scale = 1 / np.sqrt(leaf.shape[0]) if leaf.ndim == 2 else 0.1
    return jnp.asarray(rng.normal(0, scale, leaf.shape), jnp.float32)

  params = jax.tree.map(draw, nnx.to_pure_dict(abstract))
  x = (rng.random((B, *SHAPE)) < 0.3).astype(np.float32)
  model_parts = dict(
    graphdef=graphdef,
    params=params,
    hparams=member.hyperparameters(config, 10),
  )
  return model_parts, x, jax.random.key(3)


def _vae_jax_loss(parts, row, x, key):
  objective = member.objective(burda2016.get_config(row))
  loss, _ = jax.jit(training.loss_fn, static_argnums=(1, 6))(
    parts["params"],
    parts["graphdef"],
    jnp.asarray(x),
    key,
    parts["hparams"],
    jnp.zeros((), jnp.int32),
    objective,
  )
  return float(loss), objective


def _bare_loss(parts, objective, x, eps):
  params = bare_burda.from_vae_jax(parts["params"])
  loss = jax.jit(bare_burda.loss, static_argnums=3)(
    params, jnp.asarray(x.reshape(B, -1)), jnp.asarray(eps), objective.name
  )
  return float(loss)


def _eps(key, samples):
  # vae_jax's draws: normal(key, [B, k, L]) (at k = 1 those of [B, L]).
  shape = (B, samples, bare_burda.LATENT)
  return np.array(jax.random.normal(key, shape, jnp.float32))


@pytest.mark.parametrize("row", ["vae1", "iwae5"])
def test_bare_loss_is_vae_jax_training_loss(setup, row):
  parts, x, key = setup
  expected, objective = _vae_jax_loss(parts, row, x, key)
  eps = _eps(key, objective.samples)
  got = _bare_loss(parts, objective, x, eps)
  assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("row", ["vae1", "iwae5"])
def test_torch_loss_is_the_bare_loss(setup, row):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_burda

  parts, x, key = setup
  objective = member.objective(burda2016.get_config(row))
  eps = _eps(key, objective.samples)
  model = torch_burda.BurdaVAE(objective.name, objective.samples)
  enc, dec = bare_burda.from_vae_jax(parts["params"])
  linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
  with torch.no_grad():
    for linear, (w, b) in zip(linears, enc + dec, strict=True):
      linear.weight.copy_(torch.from_numpy(np.asarray(w).T.copy()))
      linear.bias.copy_(torch.from_numpy(np.array(b)))
    got = model.loss(
      torch.from_numpy(x.reshape(B, -1)), torch.from_numpy(eps)
    ).item()
  assert got == pytest.approx(_bare_loss(parts, objective, x, eps), rel=1e-5)


def test_results_md_holds_the_batch_20_section_of_the_raw_figures():
  """benchmarks/RESULTS.md is compare's page of results.json followed by
  burda_speed's section of burda_speed.json: the committed page says what
  the committed raw figures say (rewrite both with the benchmark)."""
  import json

  from benchmarks import burda_speed
  from benchmarks import compare

  with open(compare.RESULTS_JSON) as f:
    page = compare.render(json.load(f, object_hook=compare._int_keys))
  with open(burda_speed.RESULTS_JSON) as f:
    section = burda_speed.section(json.load(f))
  with open(compare.RESULTS_MD) as f:
    text = f.read()
  assert text == page + "\n" + "\n".join(section)
  assert "| iwae5: vae_jax vs the bare JAX epoch |" in text
