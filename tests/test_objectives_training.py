"""Training with k samples (VAE-k, IWAE-k, DReG) and the Burda et al. (2016)
setup: the k = 1 ELBO is today's path bit for bit, k > 1 against float64
NumPy, the configs, the report and the command.

References: Burda, Grosse & Salakhutdinov (2016), "Importance weighted
autoencoders", and their code (yburda/iwae); Tucker et al. (2019), "Doubly
reparameterized gradient estimators for Monte Carlo objectives".
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import burda2016
from experiments.configs import default
from tests.runs import tiny_config
from tests.runs import train
from vae_jax import divergences
from vae_jax import sweep
from vae_jax.sweep import burda_report
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import group as group_lib
from vae_jax.train import member as member_lib
from vae_jax.train import models
from vae_jax.train import program
from vae_jax.train import results
from vae_jax.train import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LOG_2PI = math.log(2 * math.pi)


def _tiny(**changes):
  """A small digits model and one batch of binarized digits."""
  config = tiny_config(hidden_sizes=(16,), latent_dim=3, **changes)
  parts = member_lib.build(config, (8, 8, 1), steps=1, levels=17)
  raw = data.load("digits", "dynamic").train[:6]
  x = data.to_unit_interval(jax.random.key(5), raw, "dynamic", 17)
  return config, parts, x


def _loss_and_grads(parts, x, objective, hparams=None):
  hp = parts.hparams if hparams is None else hparams
  fn = lambda p: training.loss_fn(
    p, parts.graphdef, x, jax.random.key(9), hp, jnp.int32(0), objective
  )
  return jax.jit(jax.value_and_grad(fn, has_aux=True))(parts.state.params)


# --------------------------------------------------------------------------
# k = 1: today's path.


def test_the_default_configs_train_todays_single_sample_elbo():
  for config in (default.get_config(), tiny_config()):
    assert member_lib.objective(config) == training.ELBO
    config_lib.validate(config)


def test_one_sample_elbo_is_todays_loss_bit_for_bit():
  """The k = 1 ELBO's step computes exactly the loss as it was written
  before multi-sample objectives (the same ops, so the same bits)."""
  _, parts, x = _tiny()
  hp = training.hyperparameters(beta=0.5, free_bits=0.05, warmup_steps=3)

  def todays(params):
    model = nnx.merge(parts.graphdef, params)
    mean, log_variance = model.encode(x)
    z = models.reparameterize(jax.random.key(9), mean, log_variance)
    log_lik = models.log_likelihood(model, x, model.decode(z), hp["sigma2"])
    kl = jax.vmap(divergences.kl_standard_normal_per_dim)(mean, log_variance)
    beta_t = training.kl_weight(hp, jnp.int32(0))
    return jnp.mean(-log_lik + beta_t * training.kl_penalty(kl, hp))

  (loss, _), grads = _loss_and_grads(parts, x, training.Objective(), hp)
  want, want_grads = jax.jit(jax.value_and_grad(todays))(parts.state.params)
  np.testing.assert_array_equal(loss, want)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_array_equal(a, b)
  # The k-sample path at k = 1 draws the same noise: the same loss, to
  # rounding (another program).
  (multi, _), _ = jax.jit(
    jax.value_and_grad(
      lambda p: training.multi_sample_loss(
        p,
        parts.graphdef,
        x,
        jax.random.key(9),
        hp,
        jnp.int32(0),
        training.Objective(samples=1, gradient="reparam", name="elbo"),
      ),
      has_aux=True,
    )
  )(parts.state.params)
  np.testing.assert_allclose(multi, want, rtol=2e-6)


@pytest.mark.slow
def test_a_run_with_objective_elbo_k1_is_the_default_program(tmp_path):
  """Two digits epochs through the engine (config objective='elbo',
  train_samples=1) end with exactly the parameters and optimiser state of
  the default epoch program (``make_epoch`` with no objective: what every
  run ran before there were objectives)."""
  config = tiny_config(num_epochs=2, objective="elbo", train_samples=1)
  train(config, tmp_path)
  group = group_lib.Group.build([member_lib.Member(config)])
  _, trained = group.restore(str(tmp_path))
  epoch = program.make_epoch(
    group.parts.graphdef,
    group.parts.optimizer,
    group.mesh,
    batch_size=config.batch_size,
    protocol="dynamic",
    levels=group.dataset.levels,
  )
  state = group.state
  for _ in range(2):
    state, _ = epoch(state, group.raw_train, group.hparams)
  got = jax.tree.leaves((trained.train.params, trained.train.opt_state))
  want = jax.tree.leaves((state.train.params, state.train.opt_state))
  assert len(got) == len(want) > 8
  for a, b in zip(got, want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------
# k > 1 against float64 NumPy.


def _numpy_terms(params, x, key, k, latent):
  """Per example and sample: log p(x | z), log w, and the closed-form KL of
  each latent dimension, in float64, the MLP written out."""
  as64 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
  p = as64(params)

  def mlp(layers, h):
    layers = [layers[i] for i in sorted(layers)]
    for i, layer in enumerate(layers):
      h = h @ layer["kernel"] + layer["bias"]
      h = np.maximum(h, 0) if i < len(layers) - 1 else h
    return h

  xs = np.asarray(x, np.float64).reshape(len(x), -1)
  out = mlp(p["encoder"]["layers"], xs)
  mean, log_var = out[:, :latent], out[:, latent:]
  eps = np.asarray(jax.random.normal(key, (len(x), k, latent), jnp.float32))
  z = mean[:, None] + np.exp(log_var / 2)[:, None] * eps
  logits = mlp(p["decoder"]["layers"], z)
  log_lik = np.sum(
    -xs[:, None] * np.logaddexp(0, -logits)
    - (1 - xs[:, None]) * np.logaddexp(0, logits),
    axis=-1,
  )
  log_prior = -0.5 * np.sum(z**2 + _LOG_2PI, axis=-1)
  log_q = -0.5 * np.sum(eps**2 + log_var[:, None] + _LOG_2PI, axis=-1)
  kl = 0.5 * (mean**2 + np.exp(log_var) - 1 - log_var)
  return log_lik, log_lik + log_prior - log_q, kl


@pytest.mark.parametrize("k", [2, 7])
def test_k_sample_losses_match_float64_numpy(k):
  _, parts, x = _tiny()
  hp = training.hyperparameters(beta=0.5, free_bits=0.2)
  log_lik, log_w, kl = _numpy_terms(
    parts.state.params, x, jax.random.key(9), k, latent=3
  )
  shift = log_w.max(axis=1, keepdims=True)
  iwae = shift[:, 0] + np.log(np.mean(np.exp(log_w - shift), axis=1))
  elbo = log_lik.mean(axis=1) - kl.sum(axis=1)
  expected = {
    # VAE, k: the mean over k of -log p(x|z), beta on the floored KL.
    "elbo": np.mean(-log_lik.mean(axis=1) + 0.5 * np.maximum(kl, 0.2).sum(1)),
    "iwae": -np.mean(iwae),
  }
  for name in ("elbo", "iwae"):
    objective = training.Objective(name, k)
    run_hp = hp if name == "elbo" else parts.hparams  # the IWAE: beta 1
    (loss, metrics), _ = _loss_and_grads(parts, x, objective, run_hp)
    np.testing.assert_allclose(loss, expected[name], rtol=2e-6)
    # The reported terms are the single-sample ones, averaged over k.
    np.testing.assert_allclose(metrics["elbo"], np.mean(elbo), rtol=2e-6)
    np.testing.assert_allclose(metrics["rate"], kl.sum(1).mean(), rtol=2e-6)
    np.testing.assert_allclose(
      metrics["distortion"], -log_lik.mean(), rtol=2e-6
    )
  assert expected["iwae"] < -np.mean(elbo)  # the tighter bound


def test_dreg_and_reparam_share_the_loss_and_the_decoder_gradient():
  _, parts, x = _tiny()
  out = {
    g: _loss_and_grads(parts, x, training.Objective("iwae", 5, g))
    for g in training.IWAE_GRADIENTS
  }
  (loss_r, _), grads_r = out["reparam"]
  (loss_d, _), grads_d = out["dreg"]
  np.testing.assert_array_equal(loss_r, loss_d)
  for a, b in zip(
    jax.tree.leaves(grads_r["decoder"]), jax.tree.leaves(grads_d["decoder"])
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The encoder's differ: DReG drops the score term (Tucker et al. 2019).
  enc_r = np.concatenate(
    [np.ravel(a) for a in jax.tree.leaves(grads_r["encoder"])]
  )
  enc_d = np.concatenate(
    [np.ravel(a) for a in jax.tree.leaves(grads_d["encoder"])]
  )
  assert np.abs(enc_r - enc_d).max() > 1e-4 * np.abs(enc_r).max()


# --------------------------------------------------------------------------
# Configs, sweeps, results.


@pytest.mark.parametrize(
  "change, message",
  [
    (dict(iwae_gradient="dreg"), "iwae_gradient='dreg' needs"),
    (dict(objective="iwae", beta=0.5), "beta must be 1"),
    (dict(objective="iwae", free_bits=0.1), "beta must be 1, free_bits 0"),
    (dict(objective="iwae", kl_warmup_epochs=2), "kl_warmup_epochs 0"),
    (dict(objective="vimco"), "config.objective must be one of"),
    (dict(train_samples=0), "config.train_samples must be a positive int"),
    (
      dict(
        train_samples=2,
        likelihood="gaussian",
        sigma2_mode="optimal",
        protocol="continuous",
      ),
      "trains the one-sample ELBO only",
    ),
    (
      dict(architecture="conv", hidden_sizes=(8, 8), init="glorot"),
      "need config.architecture='mlp'",
    ),
    (dict(adam_b1=1.0), r"config.adam_b1 must be a number in \[0, 1\)"),
    (dict(adam_variant="amsgrad"), "config.adam_variant must be one of"),
  ],
)
def test_bad_objective_settings_are_refused_by_name(change, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(tiny_config(**change))


def test_objective_is_a_sweep_axis_and_train_samples_splits_groups():
  c = ml_collections.ConfigDict()
  c.base = tiny_config()
  c.axes = ml_collections.ConfigDict(
    dict(objective=("elbo", "iwae"), train_samples=(1, 4), seed=(0, 1))
  )
  c.mode = "grid"
  c.member_figures = False
  sweep.validate(c)
  members = sweep.members(c)
  assert len(members) == 8
  groups = sweep.groups(members)
  assert [
    {(m.config.objective, m.config.train_samples) for m in g} for g in groups
  ] == [{("elbo", 1)}, {("elbo", 4)}, {("iwae", 1)}, {("iwae", 4)}]
  assert all(sorted(m.config.seed for m in g) == [0, 1] for g in groups)
  assert {"objective", "train_samples"}.isdisjoint(sweep.VMAPPED)
  # A member that cannot train is named.
  c.axes.beta = (0.5,)
  with pytest.raises(config_lib.ConfigError, match="sweep member 4"):
    sweep.validate(c)


def test_results_record_what_was_trained():
  for column in ("objective", "train_samples", "iwae_gradient"):
    assert column in results.CSV_COLUMNS
  # Records written before these fields read back as what they trained.
  fields = {f.name: f for f in dataclasses.fields(results.Result)}
  assert (
    fields["objective"].default,
    fields["train_samples"].default,
    fields["iwae_gradient"].default,
  ) == ("elbo", 1, "reparam")


@pytest.mark.slow
def test_an_iwae_run_trains_and_says_so(tmp_path):
  config = tiny_config(num_epochs=2, objective="iwae", train_samples=5)
  summary = train(config, tmp_path)
  with open(tmp_path / "summary.json") as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(summary))
  assert (saved["objective"], saved["train_samples"]) == ("iwae", 5)
  assert saved["iwae_gradient"] == "reparam"
  assert math.isfinite(saved["test_nll"]) and not saved["diverged"]
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 2
  # The loss is minus the IWAE bound, below the mean one-sample -ELBO.
  for r in records:
    assert r["train_loss"] < -r["train_elbo"]


# --------------------------------------------------------------------------
# The Burda et al. (2016) setup.


def test_burda_rows_follow_the_papers_code():
  rows = {row: burda2016.get_config(row) for row in burda2016.ROWS}
  assert list(rows) == ["vae1", "vae5", "vae50", "iwae5", "iwae50"]
  for row, c in rows.items():
    config_lib.validate(c)
    assert (c.objective, c.train_samples) == burda2016.ROWS[row]
    assert (c.source, c.protocol, c.train_examples) == (
      "mnist",
      "dynamic",
      59_600,
    )
    assert (tuple(c.hidden_sizes), c.activation, c.latent_dim) == (
      (200, 200),
      "tanh",
      50,
    )
    assert (c.init, c.output_bias, c.encoder_variance) == (
      "glorot",
      "data_mean",
      "log_std",
    )
    assert (c.batch_size, c.lr_schedule, c.num_epochs) == (20, "burda", 3280)
    assert (c.adam_variant, c.adam_b1, c.adam_b2, c.adam_eps) == (
      "burda2016",
      0.99,
      0.999,
      1e-4,
    )
    assert c.nll_samples == 5000
  with pytest.raises(ValueError, match="row must be one of"):
    burda2016.get_config("vae2")


def test_burda_schedule_is_their_codes_rounded_rates():
  rates = training.burda_learning_rates(1e-3)
  np.testing.assert_allclose(
    rates, [1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4]
  )
  schedule = training.learning_rate_schedule(
    "burda", 1e-3, steps_per_epoch=3, num_epochs=3280
  )
  starts = np.cumsum([0] + training.burda_stage_epochs())[:-1]
  for stage, epoch in enumerate(starts):
    np.testing.assert_allclose(schedule(3 * epoch), rates[stage], rtol=1e-6)
    if stage:
      np.testing.assert_allclose(
        schedule(3 * epoch - 1), rates[stage - 1], rtol=1e-6
      )
  np.testing.assert_allclose(schedule(3 * 10_000), 1e-4, rtol=1e-6)
  assert sum(training.burda_stage_epochs(5)) == 121


def test_burda_adam_is_their_codes_update():
  """Their Theano Adam, written out in float64: the batch-sum gradient,
  the second moment starting at one, eps outside the bias correction, and
  every update made from the moments before its step's gradient."""
  lr, b1, b2, eps, scale = 1e-3, 0.99, 0.999, 1e-4, 20.0
  opt = training.burda2016_adam(
    lambda step: lr * (0.5 if step >= 2 else 1.0),
    b1=b1,
    b2=b2,
    eps=eps,
    gradient_scale=scale,
  )
  grads = np.random.default_rng(0).normal(size=(4, 3)) * [
    [1e-3],
    [1],
    [3],
    [0.1],
  ]
  theta = np.array([0.5, -1.0, 2.0])
  params = jnp.asarray(theta, jnp.float32)
  state = opt.init(params)
  m, v = np.zeros(3), np.ones(3)
  for t, g in enumerate(grads, start=1):
    rate = lr * (0.5 if t - 1 >= 2 else 1.0)
    alpha = rate * math.sqrt(1 - b2**t) / (1 - b1**t)
    theta = theta - alpha * m / (np.sqrt(v) + eps)
    m = b1 * m + (1 - b1) * scale * g
    v = b2 * v + (1 - b2) * (scale * g) ** 2
    updates, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
    if t == 1:
      np.testing.assert_array_equal(updates, 0.0)  # m starts at zero
    params = params + updates
    np.testing.assert_allclose(params, theta, rtol=1e-6)
  assert int(state.steps) == 4


def test_burda_model_options():
  config = tiny_config(
    hidden_sizes=(16, 16),
    latent_dim=3,
    init="glorot",
    output_bias="data_mean",
    encoder_variance="log_std",
    train_examples=1000,
  )
  dataset = member_lib.load_data(config)
  assert len(dataset.train) == 1000
  np.testing.assert_array_equal(
    dataset.train, data.load("digits", "dynamic").train[:1000]
  )
  bias = member_lib.decoder_output_bias(config, dataset)
  p = np.clip(dataset.train.mean(axis=0) / 16, 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(bias, np.log(p / (1 - p)), rtol=1e-5)
  parts = member_lib.build(
    config, dataset.image_shape, 1, levels=17, output_bias=bias
  )
  params = parts.state.params
  np.testing.assert_allclose(
    params["decoder"]["layers"][2]["bias"], bias.ravel(), rtol=1e-6
  )
  # Glorot-uniform: U(-s, s), s = sqrt(6 / (fan_in + fan_out)); the
  # encoder's last layer is two heads of latent_dim outputs each.
  for net, fans in (
    ("encoder", [(64, 16), (16, 16), (16, 3)]),
    ("decoder", [(3, 16), (16, 16), (16, 64)]),
  ):
    layers = params[net]["layers"]
    for layer, (fan_in, fan_out) in zip([layers[i] for i in range(3)], fans):
      bound = math.sqrt(6 / (fan_in + fan_out))
      kernel = np.asarray(layer["kernel"])
      assert np.abs(kernel).max() <= bound
      assert np.abs(kernel).max() > 0.9 * bound
  # sigma = exp(linear): log sigma^2 is twice the encoder's output.
  model = nnx.merge(parts.graphdef, params)
  x = jnp.zeros((2, 8, 8, 1))
  out = model.encoder(x.reshape(2, -1))
  np.testing.assert_allclose(model.encode(x)[1], 2 * out[:, 3:], rtol=1e-6)
  with pytest.raises(ValueError, match="needs the bias"):
    member_lib.build(config, dataset.image_shape, 1, levels=17)
  with pytest.raises(config_lib.ConfigError, match="train_examples"):
    member_lib.load_data(tiny_config(train_examples=5000))


def _fake_result(objective, k, nll, units, epochs):
  values = {}
  for f in dataclasses.fields(results.Result):
    if f.default is not dataclasses.MISSING or f.default_factory is not (
      dataclasses.MISSING
    ):
      continue
    values[f.name] = {int: 0, float: 0.0, bool: False, str: ""}.get(
      f.type, None
    )
  values.update(
    source="mnist",
    data_protocol="dynamic",
    num_train=59_600,
    num_test=10_000,
    nll_samples=5000,
    test_nll=nll,
    active_units=units,
    epochs=epochs,
    steps=epochs * 2980,
    train_seconds=10.0 * epochs,
    timed_epochs=epochs,
  )
  return results.Result(
    **values, objective=objective, train_samples=k, iwae_gradient="reparam"
  )


def test_rows_of_an_earlier_invocation_are_read_back(tmp_path):
  row = _fake_result("elbo", 5, 88.5, 20, 121)
  os.makedirs(tmp_path / "vae5")
  with open(tmp_path / "vae5" / "summary.json", "w") as f:
    json.dump(row.to_dict(), f)
  assert burda_report.read_back(str(tmp_path), "vae5") == row
  assert burda_report.read_back(str(tmp_path), "vae50") is None
  text = burda_report.markdown(
    [row], command="c", provenance=results.provenance()
  )
  assert "| VAE, k = 5 | 86.47 | 88.50 |  | 20 | 5 | 121 |" in text
  assert "| VAE, k = 1 | 86.76 | |  | | not trained | | | |" in text
  stamped = dataclasses.replace(
    row, provenance=dict(date="2026-01-02T03:04:05", git_commit="abc" * 14)
  )
  text = burda_report.markdown(
    [stamped], command="c", provenance=results.provenance()
  )
  assert "VAE, k = 5 2026-01-02T03:04:05, commit abcabcabcabc." in text


def test_burda_report_puts_the_papers_numbers_beside_the_run(tmp_path):
  rows = [
    _fake_result("elbo", 1, 87.5, 18, 121),
    _fake_result("iwae", 5, 86.25, 21, 121),
  ]
  path = tmp_path / "burda2016.md"
  provenance = results.provenance()
  burda_report.write(
    str(path),
    rows,
    command="python -m experiments.burda",
    provenance=provenance,
  )
  text = path.read_text()
  assert (
    "| VAE, k = 1 | 86.76 | 87.50 |  | 18 | 5 | 121 | 360,580 | 10.0 |" in text
  )
  assert "| IWAE, k = 5 | 85.54 | 86.25 |  | 21 | 5 |" in text
  # The paper's other rows, in its order, marked as not trained.
  lines = [line for line in text.splitlines() if line.startswith("| VAE, k")]
  lines += [line for line in text.splitlines() if line.startswith("| IWAE, k")]
  assert [line.split("|")[1].strip() for line in lines] == [
    "VAE, k = 1",
    "VAE, k = 5",
    "VAE, k = 50",
    "IWAE, k = 5",
    "IWAE, k = 50",
  ]
  assert "| VAE, k = 50 | 86.35 | |  | | not trained | | | |" in text
  assert "| IWAE, k = 50 | 84.78 | |  | | not trained | | | |" in text
  assert "Budget: truncated" in text and "3,280 epochs" in text
  assert provenance["date"] in text and provenance["jax"] in text
  for line in burda_report.DIFFERENCES:
    assert line in text
  assert "python -m experiments.burda" in text
  assert [burda_report.stages(e) for e in (0, 1, 3, 4, 13, 121, 3280)] == [
    0,
    1,
    1,
    2,
    3,
    5,
    8,
  ]
  full = burda_report.markdown(
    [_fake_result("iwae", 50, 84.9, 25, 3280)],
    command="c",
    provenance=provenance,
  )
  assert "every row trained the paper's whole schedule" in full


@pytest.mark.slow
def test_the_burda_command_trains_rows_and_writes_the_report(tmp_path):
  report = tmp_path / "burda2016.md"
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.burda",
      "--rows=vae1,iwae5",
      "--stages=1",
      f"--workdir={tmp_path / 'runs'}",
      f"--report={report}",
      "--compilation_cache=",
      # A test-sized stand-in for MNIST: the digits, all of them.
      "--config.source=digits",
      "--config.train_examples=0",
      "--config.hidden_sizes=(16,)",
      "--config.latent_dim=2",
      "--config.nll_samples=8",
      "--config.nll_chunk_size=8",
      "--config.eval_batch_size=128",
      "--config.progress_bar=False",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  text = report.read_text()
  assert "| VAE, k = 1 | 86.76 |" in text and "| IWAE, k = 5 | 85.54 |" in text
  for row, (objective, k) in (("vae1", ("elbo", 1)), ("iwae5", ("iwae", 5))):
    with open(tmp_path / "runs" / row / "summary.json") as f:
      summary = json.load(f)
    assert (summary["objective"], summary["train_samples"]) == (objective, k)
    assert summary["epochs"] == 1 and summary["source"] == "digits"
  bad = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.burda",
      "--rows=vae2",
      "--compilation_cache=",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines()[-1].startswith("error: --rows")


def test_runs_saved_before_the_new_keys_resume_as_what_they_trained():
  from vae_jax.train import workdir as workdir_lib

  config = tiny_config().to_dict()
  old = {k: v for k, v in config.items() if k not in workdir_lib.ADDED_KEYS}
  assert workdir_lib.resume_conflicts(old, config) == []
  changed = dict(config, objective="iwae", train_samples=5)
  assert workdir_lib.resume_conflicts(old, changed) == [
    "objective",
    "train_samples",
  ]
  for key, value in workdir_lib.ADDED_KEYS.items():
    assert default.get_config()[key] == value, key


def test_readme_headline_is_docs_burda2016():
  """The README's full-MNIST headline quotes docs/burda2016.md's run: each
  row's NLL and active units, and its stages and epochs."""
  with open(os.path.join(ROOT, "docs", "burda2016.md")) as f:
    rows = {
      cells[0]: cells
      for cells in (
        [c.strip() for c in line.strip("|").split("|")]
        for line in f
        if line.startswith(("| VAE, k = ", "| IWAE, k = "))
      )
    }
  with open(os.path.join(ROOT, "README.md")) as f:
    head = " ".join(f.read().split("## Two commands")[0].split())
  vae, iwae = rows["VAE, k = 1"], rows["IWAE, k = 5"]
  # | row | paper NLL | NLL | paper active units | active units | stages | epochs |
  assert f"**{vae[2]} nats** as a VAE" in head
  assert f"**{iwae[2]} nats** as an IWAE" in head
  assert f"with {vae[4]} and {iwae[4]} active units" in head
  vae5 = rows["VAE, k = 5"]
  assert vae5[5] == vae[5] and f"same budget: {vae5[2]} nats" in head
  assert vae[5] == iwae[5] and f"--stages={vae[5]}" in head
  assert f"first {vae[5]} of 8 learning-rate stages: {vae[6]} of 3,280" in head
