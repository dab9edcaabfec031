"""The accelerator benchmark runs end to end, at tiny sizes on the CPU, so it
is known to work before a GPU is lent."""

import json

import pytest

from benchmarks import accelerator
from experiments.configs import burda2016

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def test_accelerator_benchmark_runs_at_tiny_sizes(tmp_path):
  out = tmp_path / "ACCELERATOR.md"
  assert accelerator.main(["--tiny", f"--out={out}"]) == 0
  text = out.read_text()
  record = json.loads((tmp_path / "ACCELERATOR.json").read_text())
  assert record["tiny"] and "--tiny: sizes shrunk" in text
  assert [t["batch_size"] for t in record["throughput"]] == [16, 32]
  assert all(t["examples_per_second"] > 0 for t in record["throughput"])
  sweep = record["sweep"]
  assert sweep["members"] == 4 and sweep["ratio"] > 0
  assert sweep["ratio"] == pytest.approx(
    sweep["sweep_seconds_per_epoch"] / sweep["one_member_seconds_per_epoch"]
  )
  nll = record["nll"]
  assert nll["images"] == 40 and nll["samples"] == 8 and nll["seconds"] > 0
  burda = record["burda"]
  assert [b["row"] for b in burda] == ["vae1", "iwae50"]
  assert [(b["objective"], b["train_samples"]) for b in burda] == [
    ("elbo", 1),
    ("iwae", 50),
  ]
  # The GPU run times every row of Table 1.
  assert accelerator.FULL["burda_rows"] == tuple(burda2016.ROWS)
  for b in burda:
    assert b["seconds_per_epoch"] > 0
    assert b["full_schedule_hours"] == pytest.approx(
      b["seconds_per_epoch"] * 3280 / 3600
    )
  for needle in (
    "training, batch 16",
    "sweep / one member",
    "<= 60 s",
    "Burda iwae50 (iwae, k = 50), batch 20, s per epoch",
    record["provenance"]["jax"],
  ):
    assert needle in text


def test_bare_epoch_forms_train_the_same_model_on_the_same_draws():
  """The floor contenders differ only in how they compute, not in what:
  stock, fused and kernels binarize with the same bits and take the same
  steps, so their per-step losses agree to float rounding; with no
  binarization (soft targets) the losses are different ones."""
  import jax
  import numpy as np
  import optax

  from benchmarks import bare_jax

  raw = jax.random.randint(jax.random.key(1), (256, 784), 0, 256).astype(
    np.uint8
  )
  k_enc, k_dec = jax.random.split(jax.random.key(0))
  params = (
    bare_jax._init(k_enc, (784, 32, 2 * bare_jax.LATENT)),
    bare_jax._init(k_dec, (bare_jax.LATENT, 32, 784)),
  )
  optimizer = optax.adam(1e-3)
  losses = {}
  for form in bare_jax.FORMS:
    epoch = bare_jax.make_epoch(form, 64, optimizer)
    state = (params, optimizer.init(params))
    history = []
    key = jax.random.key(2)
    for _ in range(2):
      p, o, key, step_losses = epoch(*state, raw, key)
      state = (p, o)
      history.append(np.asarray(step_losses))
    losses[form] = np.concatenate(history)
  assert losses["fused"].shape == (8,)
  np.testing.assert_array_equal(losses["fused"], losses["stock"])
  np.testing.assert_allclose(losses["kernels"], losses["fused"], rtol=2e-6)
  assert not np.allclose(losses["none"], losses["fused"], rtol=1e-5)


def test_jax_vae_step_contender_trains_as_the_engine_epoch(capsys):
  """The ``step`` contender (the benchmark's own Python loop of jitted
  guarded steps) takes the steps of the engine's epoch (a group of one
  member, ``program.make_epoch``): the same loss and test ELBO, so the two
  differ only in how they run."""
  from benchmarks import jax_vae

  events = {}
  for form in jax_vae.FORMS:
    jax_vae.main([f"--form={form}", "--batch_size=1024", "--epochs=1"])
    lines = capsys.readouterr().out.splitlines()
    events[form] = {e["event"]: e for e in map(json.loads, lines)}
  for form in jax_vae.FORMS:
    assert events[form]["epoch"]["examples"] == 3 * 1024
  for event, field in (("epoch", "train_loss"), ("done", "test_elbo")):
    assert events["step"][event][field] == pytest.approx(
      events["epoch"][event][field], rel=1e-6
    )
