"""Sweeps: members and groups, vmapped == one by one, sharded == unsharded,
divergence masking, resume, the sigma^2-beta equivalence, and two processes
under jax.distributed == one process.

conftest gives this process 8 CPU devices; the multi-process test starts its
own processes.

Compiling is most of this file's time, so its tests share programs: the
library caches a group's compiled programs on the model structure, the
optimiser's keys (``num_epochs`` among them), the mesh and the sizes, so the
fixed-sigma^2 Gaussian sweeps here all train :func:`tiny_sweep`'s 4 epochs
with at most 8 members (one per device: one program), from the same few
sigma^2 values (the compiled initialisation is one per value). Tests that
only read a sweep's results share it (module fixtures).
"""

import csv
import functools
import json
import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments.configs import sweep as sweep_configs
from vae_jax import sweep
from vae_jax.train import checkpoints
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import experiment
from vae_jax.train import logs
from vae_jax.train import program
from vae_jax.train import results
from vae_jax.train import group as group_lib
from vae_jax.train import member as member_lib
from vae_jax.train import training

# End to end: every test here trains models (deselect with -m 'not slow').
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("train_seconds", "eval_seconds", "examples_per_second", "provenance")


def tiny_sweep(
  axes: dict, mode: str = "grid", **base
) -> ml_collections.ConfigDict:
  """A sweep of small Gaussian VAEs on the 8x8 digits' grey levels."""
  c = sweep_configs.get_config("digits")
  c.base.update(
    dict(
      hidden_sizes=(32,),
      latent_dim=4,
      batch_size=100,
      num_epochs=4,
      checkpoint_every=1,
      nll_samples=16,
      nll_chunk_size=8,
      eval_batch_size=128,
      progress_bar=False,
    )
  )
  c.base.update(base)
  c.mode = mode
  c.axes = ml_collections.ConfigDict(axes)
  return c


def run_sweep(c, workdir) -> list[dict]:
  """A sweep's rows, as results.json holds them."""
  return [r.to_dict() for r in sweep.run(c, workdir)]


def _without_timing(rows):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _assert_rows_close(a, b, rtol):
  assert len(a) == len(b)
  for ra, rb in zip(_without_timing(a), _without_timing(b)):
    assert ra.keys() == rb.keys()
    for key in ra:
      if isinstance(ra[key], float):
        np.testing.assert_allclose(ra[key], rb[key], rtol=rtol, err_msg=key)
      elif key not in ("kl_per_dim", "provenance"):
        assert ra[key] == rb[key], key


# --------------------------------------------------------------------------
# Members and groups.


def test_grid_zip_dedupe_and_groups():
  c = tiny_sweep(dict(beta=(0.5, 1.0), sigma2=(0.1, 0.2, 0.4)))
  members = sweep.members(c)
  assert [(m.config.beta, m.config.sigma2) for m in members] == [
    (b, s) for b in (0.5, 1.0) for s in (0.1, 0.2, 0.4)
  ]
  assert [m.index for m in members] == list(range(6))
  assert members[4].name == "beta=1.0,sigma2=0.2"
  assert members[4].axes == dict(beta=1.0, sigma2=0.2)
  assert sweep.groups(members) == [members]  # one program
  # sigma2 means nothing to a Bernoulli decoder: its copies collapse.
  c = tiny_sweep(
    dict(likelihood=("gaussian", "bernoulli"), sigma2=(0.1, 0.2)),
    protocol="dynamic",
  )
  members = sweep.members(c)
  assert [(m.config.likelihood, m.config.sigma2) for m in members] == [
    ("gaussian", 0.1),
    ("gaussian", 0.2),
    ("bernoulli", c.base.sigma2),
  ]
  assert sweep.groups(members) == [members[:2], members[2:]]
  # A Laplace's sigma2 is its scale b: it keeps the axis, as the Gaussian.
  c = tiny_sweep(
    dict(likelihood=("laplace",), sigma2=(0.1, 0.2)), protocol="continuous"
  )
  assert [m.config.sigma2 for m in sweep.members(c)] == [0.1, 0.2]
  c = tiny_sweep(dict(beta=(0.5, 1.0, 2.0), seed=(7,)), mode="zip")
  assert [(m.config.beta, m.config.seed) for m in sweep.members(c)] == [
    (0.5, 7),
    (1.0, 7),
    (2.0, 7),
  ]
  assert program.padded_size(12, 8) == 16 and program.padded_size(8, 8) == 8
  assert program.padded_size(3, 1) == 3


@pytest.mark.parametrize(
  "change, message",
  [
    (dict(axes=dict(betta=(1.0,))), "config.axes.betta is not a training"),
    (dict(axes=dict(beta=())), "config.axes.beta must be a non-empty tuple"),
    (
      dict(axes=dict(beta=(1.0, 2.0), seed=(0, 1, 2)), mode="zip"),
      "mode 'zip' needs",
    ),
    (dict(mode="random"), "config.mode must be one of"),
    (
      dict(axes=dict(beta=(1.0, -1.0))),
      r"sweep member 1 \(beta=-1.0\): "
      r"config.beta must be a finite number >= 0",
    ),
  ],
)
def test_bad_sweep_configs_are_named(change, message):
  c = tiny_sweep(dict(beta=(1.0,)))
  if "axes" in change:
    c.axes = ml_collections.ConfigDict(change["axes"])
  if "mode" in change:
    c.mode = change["mode"]
  with pytest.raises(config_lib.ConfigError, match=message):
    sweep.validate(c)


# --------------------------------------------------------------------------
# The program: vmapped == one by one; sharded == unsharded.


# Six members that differ in beta, sigma2 and seed, for the program's tests
# (two sigma2 values: the compiled initialisation is one per sigma2).
SIX = dict(
  beta=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
  sigma2=(0.04, 0.1) * 3,
  seed=(0, 1, 2, 3, 4, 5),
)


def _train_sweep(c, mesh, epochs):
  group = group_lib.Group.build(sweep.members(c), mesh=mesh)
  # The arguments as the engine passes them: the same cached program.
  epoch = program.make_epoch(
    group.parts.graphdef,
    group.parts.optimizer,
    mesh,
    batch_size=c.base.batch_size,
    protocol=group.dataset.protocol,
    levels=group.dataset.levels,
    objective=group.parts.objective,
  )
  state = group.state
  for _ in range(epochs):
    state, metrics = epoch(state, group.raw_train, group.hparams)
  k = group.size
  return jax.tree.map(lambda v: v[:k], program.gather((state, metrics))), state


@functools.cache
def _member_epoch(graphdef, optimizer, *, batch_size, protocol, levels):
  """One member's jitted epoch (:func:`training.train_epoch`), one per model
  structure and optimiser object: members whose configs build equal ones
  compile it once."""
  return jax.jit(
    functools.partial(
      training.train_epoch,
      graphdef,
      optimizer,
      batch_size=batch_size,
      protocol=protocol,
      levels=levels,
    )
  )


@pytest.fixture(scope="module")
def six_on_one_device():
  """The six members trained 2 epochs as one group on one device."""
  c = tiny_sweep(SIX, mode="zip")
  (state, metrics), _ = _train_sweep(c, program.make_mesh(jax.devices()[:1]), 2)
  return c, state, metrics


def test_vmapped_sweep_equals_members_one_by_one(six_on_one_device):
  c, state, metrics = six_on_one_device
  dataset = data.load(c.base.source, c.base.protocol)
  steps = len(dataset.train) // c.base.batch_size
  raw = jax.device_put(dataset.train)
  for m, member in enumerate(sweep.members(c)):
    built = member_lib.build(
      member.config, dataset.image_shape, steps, levels=dataset.levels
    )
    single, hparams = built.state, built.hparams
    epoch = _member_epoch(
      built.graphdef,
      built.optimizer,
      batch_size=100,
      protocol=dataset.protocol,
      levels=dataset.levels,
    )
    for _ in range(2):
      single, single_metrics = epoch(single, raw, hparams)
    np.testing.assert_allclose(
      metrics["loss"][m], single_metrics["loss"], rtol=2e-5
    )
    for a, b in zip(
      jax.tree.leaves(state.train.params), jax.tree.leaves(single.params)
    ):
      np.testing.assert_allclose(a[m], b, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(
      state.train.key[m], jax.random.key_data(single.key)
    )
  # The members really differ (different beta, sigma2 and seed).
  assert not np.allclose(metrics["loss"][0], metrics["loss"][1])


@pytest.fixture(scope="module")
def six_all_vmapped():
  """The six members' fresh group (one device) and one epoch of all of them
  vmapped at once (members_at_once=None, as on an accelerator)."""
  c = tiny_sweep(SIX, mode="zip")
  group = group_lib.Group.build(sweep.members(c))
  return group, _group_epoch(group)(group.state, group.raw_train, group.hparams)


def _group_epoch(group, **kw):
  return jax.jit(
    functools.partial(
      program.group_epoch,
      group.parts.graphdef,
      group.parts.optimizer,
      batch_size=100,
      protocol=group.dataset.protocol,
      levels=group.dataset.levels,
      **kw,
    )
  )


@pytest.mark.parametrize(
  "num_shards,members_at_once", [(1, 2), (1, 4), (2, 2), (3, 1)]
)
def test_members_at_once_equals_all_vmapped(
  six_all_vmapped, num_shards, members_at_once
):
  # 6 members: groups of 2 or 4 (a remainder of 2) within 1, 2 or 3 shards.
  group, (all_state, all_metrics) = six_all_vmapped
  if (num_shards, members_at_once) == (1, program.CPU_MEMBERS_AT_ONCE):
    # What make_epoch runs on a one-device CPU mesh (its program is cached:
    # six_on_one_device compiled it), from a fresh group of the same six.
    assert program.members_at_once(group.mesh) == members_at_once
    c = tiny_sweep(SIX, mode="zip")
    (state_n, metrics_n), _ = _train_sweep(c, group.mesh, 1)
  else:
    state_n, metrics_n = _group_epoch(
      group, num_shards=num_shards, members_at_once=members_at_once
    )(group.state, group.raw_train, group.hparams)
  np.testing.assert_allclose(metrics_n["loss"], all_metrics["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(state_n), jax.tree.leaves(all_state)):
    a, b = (
      jax.random.key_data(x)
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
      else x
      for x in (a, b)
    )
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert not np.allclose(all_metrics["loss"][0], all_metrics["loss"][-1])


def test_sharded_sweep_equals_unsharded(six_on_one_device):
  c, one, m1 = six_on_one_device  # 6 -> padded to 8 below
  (eight, m8), placed = _train_sweep(c, program.make_mesh(), 2)
  assert len(jax.devices()) == 8
  leaf = jax.tree.leaves(placed.train.params)[0]
  assert len(leaf.sharding.device_set) == 8 and leaf.shape[0] == 8
  assert leaf.addressable_shards[0].data.shape[0] == 1  # one member each
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# Whole sweeps through the driver.


# The sweep most tests read: 2 beta x 2 sigma2 (2 sigma^2 beta = 0.02 on one
# diagonal), with the test ELBO every 2 epochs and each member's figures. Its
# axes are the shipped sweep config's (seed and likelihood of one value
# each), so the command line of the two-process test gives the same rows.
AXES = dict(
  beta=(0.25, 1.0), likelihood=("gaussian",), seed=(0,), sigma2=(0.01, 0.04)
)


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory):
  c = tiny_sweep(AXES, eval_every=2)
  c.member_figures = True
  workdir = tmp_path_factory.mktemp("reference")
  rows = run_sweep(c, str(workdir))
  return c, workdir, rows


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  # The reference sweep's grid and a sigma^2 of 1e-45 (members 2 and 5):
  # every loss of those is infinite, so they diverge at step 1; the others
  # must finish as if they were not there.
  c = tiny_sweep(dict(beta=(0.25, 1.0), sigma2=(0.01, 0.04, 1e-45)))
  workdir = str(tmp_path_factory.mktemp("sweep"))
  return c, workdir, run_sweep(c, workdir)


def test_sweep_writes_results_and_figures(finished_sweep):
  _, workdir, rows = finished_sweep
  assert [r["member"] for r in rows] == [0, 1, 2, 3, 4, 5]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == json.loads(json.dumps(rows))
  with open(os.path.join(workdir, "results.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 6
  for row, line in zip(rows, table):
    if row["diverged"]:
      # Not scored: its test columns are empty.
      assert row["test_nll"] is None and line["test_nll"] == ""
      continue
    for key in (
      "test_rate",
      "test_distortion",
      "test_elbo",
      "test_nll",
      "beta",
      "sigma2",
    ):
      assert float(line[key]) == pytest.approx(row[key], rel=1e-12), key
    assert line["diverged"] == str(row["diverged"])
  good = [r for r in rows if not r["diverged"]]
  for r in good:
    # ELBO = -(rate + distortion); NLL <= -ELBO (to IWAE's noise); the
    # squared error is what the Gaussian distortion is made of.
    assert r["test_elbo"] == pytest.approx(
      -(r["test_rate"] + r["test_distortion"]), rel=1e-6
    )  # f32 terms
    assert r["test_nll"] <= -r["test_elbo"] + 0.5
    d = 64
    assert r["test_distortion"] == pytest.approx(
      r["test_sse"] / (2 * r["sigma2"])
      + d / 2 * np.log(2 * np.pi * r["sigma2"]),
      rel=1e-6,
    )
    assert r["bits_per_dim"] == pytest.approx(
      (r["test_nll"] + d * np.log(17)) / (d * np.log(2)), rel=1e-9
    )
  for name in ("rate_distortion", "heatmap_rate", "heatmap_sse"):
    with Image.open(os.path.join(workdir, "figures", f"{name}.png")) as im:
      assert im.size[0] > 100
  records = logs.read_records(
    os.path.join(workdir, "groups", "000", "metrics.jsonl")
  )
  # One record per member per epoch, named by the member's hyperparameters.
  assert [(r["epoch"], r["member"]) for r in records] == [
    (e, f"beta={b},sigma2={s}")
    for e in (1, 2, 3, 4)
    for b in (0.25, 1.0)
    for s in (0.01, 0.04, 1e-45)
  ]
  assert [r["alive"] for r in records] == [True, True, False] * 8


def test_a_diverged_member_is_frozen_and_the_rest_finish(
  finished_sweep, reference_sweep
):
  _, _, rows = finished_sweep
  assert [r["diverged"] for r in rows] == [False, False, True] * 2
  assert [r["diverged_step"] for r in rows] == [None, None, 1] * 2
  assert rows[2]["steps"] == 0 and rows[0]["steps"] == 4 * 14
  # The survivors equal a sweep without the diverged members.
  clean = reference_sweep[2]
  for r, ref in zip([rows[0], rows[1], rows[3], rows[4]], clean):
    assert (r["beta"], r["sigma2"]) == (ref["beta"], ref["sigma2"])
    for key in ("test_rate", "test_distortion", "test_nll", "test_elbo"):
      assert r[key] == pytest.approx(ref[key], rel=1e-5), key


def test_members_equal_single_runs(finished_sweep, tmp_path):
  # Member 4 (beta 1, sigma2 0.04) trained alone by experiment.py.
  c, _, rows = finished_sweep
  member = sweep.members(c)[4].config
  assert (member.beta, member.sigma2) == (1.0, 0.04)
  summary = experiment.train_and_evaluate(member, str(tmp_path)).to_dict()
  for key in ("rate", "distortion", "elbo", "nll"):
    assert rows[4][f"test_{key}"] == pytest.approx(
      summary[f"test_{key}"], rel=1e-4
    ), key
  assert rows[4]["active_units"] == summary["active_units"]
  assert rows[4]["bits_per_dim"] == pytest.approx(
    summary["bits_per_dim"], rel=1e-4
  )


def test_interrupted_sweep_resumes_to_the_same_results(
  reference_sweep, tmp_path, monkeypatch
):
  # The reference sweep's training (without its figures and periodic test
  # ELBOs, which the rows do not hold), killed after epoch 2 of 4.
  c = tiny_sweep(AXES)
  reference = reference_sweep[2]
  save = checkpoints.Checkpointer.save

  def save_then_die(self, epoch, state):
    save(self, epoch, state)
    if epoch == 2:
      raise KeyboardInterrupt("killed after the checkpoint of epoch 2")

  monkeypatch.setattr(checkpoints.Checkpointer, "save", save_then_die)
  workdir = str(tmp_path / "cut")
  with pytest.raises(KeyboardInterrupt):
    run_sweep(c, workdir)
  monkeypatch.undo()
  assert not os.path.exists(os.path.join(workdir, "results.csv"))
  resumed = run_sweep(c, workdir)
  assert _without_timing(resumed) == _without_timing(reference)
  records = logs.read_records(
    os.path.join(workdir, "groups", "000", "metrics.jsonl")
  )
  assert [r["epoch"] for r in records] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
  # A finished sweep is read back, not retrained; a changed axis is refused.
  assert _without_timing(run_sweep(c, workdir)) == _without_timing(reference)
  c.axes.beta = (0.25, 4.0)
  with pytest.raises(
    config_lib.ConfigError,
    match=re.escape(
      "sweep with a different config (axes: saved {'beta': [0.25, 1.0], "
      "'likelihood': ['gaussian'], 'seed': [0], 'sigma2': [0.01, 0.04]}, "
      "now {'beta': (0.25, 4.0), 'likelihood': ('gaussian',), 'seed': (0,), "
      "'sigma2': (0.01, 0.04)})"
    ),
  ):
    run_sweep(c, workdir)


def test_groups_of_different_likelihoods_run_one_after_another(tmp_path):
  # The Gaussian group is the reference sweep's program (cached).
  c = tiny_sweep(
    dict(
      likelihood=("gaussian", "continuous_bernoulli"),
      beta=(0.25, 1.0),
      sigma2=(0.01,),
    ),
  )
  rows = run_sweep(c, str(tmp_path))
  # Axes combine in alphabetical order (beta before likelihood).
  assert [(r["likelihood"], r["beta"], r["group"]) for r in rows] == [
    ("gaussian", 0.25, 0),
    ("continuous_bernoulli", 0.25, 1),
    ("gaussian", 1.0, 0),
    ("continuous_bernoulli", 1.0, 1),
  ]
  assert rows[1]["sigma2"] is None and rows[1]["test_sse"] is None
  assert rows[0]["sigma2"] == 0.01
  assert all(np.isfinite(r["test_nll"]) for r in rows)


def test_learned_sigma2_members_match_single_runs(tmp_path):
  c = tiny_sweep(
    dict(beta=(0.5, 1.0)), sigma2_mode="learned", sigma2=0.1, num_epochs=2
  )
  rows = run_sweep(c, str(tmp_path / "sweep"))
  summary = experiment.train_and_evaluate(
    sweep.members(c)[1].config, str(tmp_path / "single")
  ).to_dict()
  assert rows[1]["eval_sigma2"] == pytest.approx(
    summary["eval_sigma2"], rel=1e-5
  )
  assert rows[1]["eval_sigma2"] != pytest.approx(0.1, rel=1e-3)  # it moved
  assert rows[1]["test_nll"] == pytest.approx(summary["test_nll"], rel=1e-4)
  # The squared error behind the distortion, at the learned sigma^2.
  s2 = rows[1]["eval_sigma2"]
  assert rows[1]["test_distortion"] == pytest.approx(
    rows[1]["test_sse"] / (2 * s2) + 32 * np.log(2 * np.pi * s2), rel=1e-5
  )


def test_fitted_sigma2_is_the_training_mse_of_one_reconstruction():
  # sigma-VAE's sigma^2 on the TRAINING images, against NumPy (float64): the
  # same images and noise, encoder and decoder applied by hand.
  c = tiny_sweep(dict(seed=(0, 1)), sigma2_mode="optimal")
  mesh = program.make_mesh()
  group = group_lib.Group.build(sweep.members(c), mesh=mesh)  # padded to 8
  state, raw, dataset = group.state, group.raw_train, group.dataset
  fitted = program.fitted_sigma2(
    group.parts.graphdef,
    mesh,
    state.train.params,
    raw,
    dataset,
    latent_dim=4,
    eval_seed=0,
    min_sigma2=1e-4,
    chunk=300,
  )
  data_key, noise_key = jax.random.split(jax.random.key(0))
  x = np.asarray(
    data.to_unit_interval(data_key, raw, dataset.protocol, dataset.levels),
    np.float64,
  )
  eps = np.asarray(
    jax.random.normal(noise_key, (len(x), 4), jnp.float32), np.float64
  )
  params = program.gather(state.train.params)
  for m in range(2):
    p = jax.tree.map(lambda v: np.asarray(v[m], np.float64), params)
    enc = [p["encoder"]["layers"][i] for i in (0, 1)]
    dec = [p["decoder"]["layers"][i] for i in (0, 1)]
    dense = lambda h, layer: h @ layer["kernel"] + layer["bias"]
    h = dense(np.maximum(dense(x.reshape(len(x), -1), enc[0]), 0), enc[1])
    z = h[:, :4] + np.exp(0.5 * h[:, 4:]) * eps
    logits = dense(np.maximum(dense(z, dec[0]), 0), dec[1])
    mse = np.mean((x.reshape(len(x), -1) - 1 / (1 + np.exp(-logits))) ** 2)
    assert fitted[m] == pytest.approx(max(mse, 1e-4), rel=1e-5)
  assert fitted[0] != pytest.approx(fitted[1], rel=1e-3)


# --------------------------------------------------------------------------
# The sigma^2-beta equivalence.


def test_equal_sigma2_beta_members_end_at_the_same_rate_and_error(
  reference_sweep,
):
  # (1/(2 s)) SSE + b KL = [SSE + 2 s b KL] / (2 s): members with equal s*b
  # minimise the same function up to the factor 1/(2 s), and Adam's step
  # m / (sqrt(v) + eps) ignores that factor but for eps. With one seed they
  # share init, data and noise, so they follow the same path but for eps:
  # the whole gap is Adam's eps (the test below shows it bit for bit, the
  # sigma^2 ratio here being 4); members with a different s*b do not.
  rows = reference_sweep[2]  # beta (0.25, 1) x sigma2 (0.01, 0.04), 4 epochs
  by = {(r["beta"], r["sigma2"]): r for r in rows}
  a, b = by[(0.25, 0.04)], by[(1.0, 0.01)]  # 2 s b = 0.02 for both
  others = [by[(0.25, 0.01)], by[(1.0, 0.04)]]  # 0.005 and 0.08
  for key in ("test_rate", "test_sse"):
    gap = abs(a[key] - b[key])
    spread = min(abs(a[key] - o[key]) for o in others)
    # Measured (this CPU, 4 epochs, 56 steps): gap 6e-8 (rate) and 7e-9
    # (squared error) relative (Adam's eps = 1e-8 acting on gradients of
    # different scale; it is 1e-6 of the gradients' size here), spread 0.08%
    # (squared error) to 4% (rate). The bounds leave a factor of >= 1000 for
    # other CPUs and XLA versions.
    assert gap <= 1e-4 * abs(a[key]), (key, gap)
    assert gap <= 1e-2 * spread, (key, gap, spread)
  # Their distortions in nats differ (they are different likelihoods).
  assert abs(a["test_distortion"] - b["test_distortion"]) > 10


def _trained(config, epochs):
  dataset = data.load(config.source, config.protocol)
  steps = member_lib.steps_per_epoch(config, len(dataset.train))
  parts = member_lib.build(
    config, dataset.image_shape, steps, levels=dataset.levels
  )
  epoch = _member_epoch(
    parts.graphdef,
    parts.optimizer,
    batch_size=config.batch_size,
    protocol=dataset.protocol,
    levels=dataset.levels,
  )
  state, raw = parts.state, jnp.asarray(dataset.train)
  for _ in range(epochs):
    state, _ = epoch(state, raw, parts.hparams)
  # The key is a typed PRNG key (no NumPy form) and is not compared.
  return jax.tree.map(np.asarray, state._replace(key=None))


def test_sigma2_beta_partner_is_its_partner_with_eps_scaled_bit_for_bit():
  # Partners (s, b) and (r s, b / r), r = 4: the larger-s member's loss is
  # the other's divided by r (up to a constant), so are its gradients, and
  # Adam's step m / (sqrt(v) + eps) becomes m / (sqrt(v) + r eps) in the
  # other's terms. With r a power of two every scaling is exact in binary
  # floating point, so the larger-s member trained with eps IS its partner
  # trained with r eps, to the last bit; with the same eps it is not.
  base = tiny_sweep({}).base
  larger = ml_collections.ConfigDict(base.to_dict())
  larger.update(sigma2=0.04, beta=0.25, adam_eps=1e-8)
  scaled = ml_collections.ConfigDict(base.to_dict())
  scaled.update(sigma2=0.01, beta=1.0, adam_eps=4e-8)
  same_eps = ml_collections.ConfigDict(base.to_dict())
  same_eps.update(sigma2=0.01, beta=1.0, adam_eps=1e-8)
  a, b, c = (_trained(x, epochs=5) for x in (larger, scaled, same_eps))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
  # Adam's first moments: the larger-s member's are its partner's / 4.
  mu_a, mu_b = (s.opt_state[0].mu for s in (a, b))
  for x, y in zip(jax.tree.leaves(mu_a), jax.tree.leaves(mu_b)):
    np.testing.assert_array_equal(4 * x, y)
  # With the same eps the paths part.
  assert any(
    not np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params))
  )


# --------------------------------------------------------------------------
# Two processes under jax.distributed == one process.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _sweep_cli(workdir, devices, *extra):
  """The sweep command on the reference sweep's config, in a process that
  compiles as this one does (the same XLA flags and x64 setting)."""
  flags = [
    f
    for f in os.environ.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  env = dict(
    os.environ,
    XLA_FLAGS=" ".join(
      flags + [f"--xla_force_host_platform_device_count={devices}"]
    ),
    JAX_PLATFORMS="cpu",
    JAX_ENABLE_X64=str(jax.config.jax_enable_x64),
  )
  base = tiny_sweep({}).base
  cmd = [
    sys.executable,
    "-m",
    "experiments.sweep",
    "--config=experiments/configs/sweep.py:digits",
    *(
      f"--config.base.{key}={base[key]}"
      for key in (
        "hidden_sizes",
        "latent_dim",
        "batch_size",
        "num_epochs",
        "checkpoint_every",
        "nll_samples",
        "nll_chunk_size",
        "eval_batch_size",
        "progress_bar",
      )
    ),
    *(f"--config.axes.{key}={values}" for key, values in AXES.items()),
    f"--workdir={workdir}",
    "--compilation_cache=",
    *extra,
  ]
  return subprocess.Popen(
    cmd,
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def test_two_processes_give_the_results_of_one(reference_sweep, tmp_path):
  # Two processes of 4 devices each train the reference sweep, which this
  # process (8 devices: the same one member per device) trained alone.
  port = _free_port()
  two = [
    _sweep_cli(
      tmp_path,
      4,
      f"--coordinator_address=localhost:{port}",
      "--num_processes=2",
      f"--process_id={i}",
    )
    for i in range(2)
  ]
  outputs = []
  try:
    for p in two:
      outputs.append(p.communicate(timeout=240)[0])
  finally:
    for p in two:
      p.kill()
  for p, out in zip(two, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "4 members on 8 device(s) in 2 process(es)" in outputs[0]
  assert outputs[1].strip() == "" or "members on" not in outputs[1]
  with open(tmp_path / "results.json") as f:
    rows = json.load(f)
  _assert_rows_close(reference_sweep[2], rows, rtol=1e-5)


def test_cli_table_leaves_diverged_cells_empty(finished_sweep):
  rows = [results.Result(**r) for r in finished_sweep[2]]
  lines = results.format_table(rows).splitlines()
  assert lines[0].split() == [
    "member",
    "likelihood",
    "beta",
    "sigma2",
    "seed",
    "elbo",
    "rate",
    "distortion",
    "sse",
    "nll",
    "units",
    "diverged",
  ]
  assert lines[3].split() == ["2", "gaussian", "0.25", "1e-45", "0", "True"]
  assert lines[1].split()[5] == f"{finished_sweep[2][0]['test_elbo']:.3f}"
  assert len(lines[1].split()) == 12


# --------------------------------------------------------------------------
# What a sweep gains from sharing the single run's engine.


def test_sweep_members_get_periodic_test_elbo_and_named_tensorboard_runs(
  reference_sweep,
):
  c, workdir, rows = reference_sweep
  assert (c.base.num_epochs, c.base.eval_every) == (4, 2) and c.member_figures
  group = workdir / "groups" / "000"
  records = logs.read_records(str(group / "metrics.jsonl"))
  names = [f"beta={b},sigma2={s}" for b in (0.25, 1.0) for s in (0.01, 0.04)]
  assert [r["name"] for r in rows] == names
  for epoch in (1, 2, 3, 4):
    got = {r["member"]: r for r in records if r["epoch"] == epoch}
    assert sorted(got) == sorted(names)
    for r in got.values():
      assert ("test_elbo" in r) == (epoch % 2 == 0), (epoch, r)
  # The last periodic test ELBO is the final one (same key, same sample).
  for row in rows:
    last = [r for r in records if r["member"] == row["name"]][-1]
    assert last["test_elbo"] == pytest.approx(row["test_elbo"], rel=1e-5)
    assert last["test_elbo"] == pytest.approx(
      -(last["test_rate"] + last["test_distortion"]), rel=1e-6
    )
  # One TensorBoard run per member, named by its hyperparameters, with an
  # hparams summary; per-member figures on request.
  assert sorted(os.listdir(group / "tensorboard")) == sorted(names)
  scalars = _tensorboard_scalars(group / "tensorboard" / names[0])
  assert [step for step, _ in scalars["test_elbo"]] == [2, 4]
  assert scalars["test_elbo"][-1][1] == pytest.approx(
    [r for r in records if r["member"] == names[0]][-1]["test_elbo"]
  )
  assert "hparam/test_nll" in scalars
  for name in names:
    with Image.open(group / "figures" / name / "reconstructions.png") as im:
      assert im.size[0] > 100
  # The config's sigma^2 as given: 0.01, not float32's 0.009999999776.
  with open(workdir / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [t["eval_sigma2"] for t in table] == ["0.01", "0.04"] * 2
  assert rows[0]["provenance"]["jax"] == jax.__version__


def test_a_members_hparams_share_its_events_file(tmp_path):
  # One writer per member: the hparams summary and its metrics go into the
  # file of the member's scalars, which stays whole (a second writer opened
  # in the same second as the first would write the same file name).
  log = logs.MetricsLog(str(tmp_path))
  log.write([dict(epoch=1, member="beta=1.0", loss=3.0)])
  log.hparams("beta=1.0", dict(beta=1.0, sigma2=None), dict(test_nll=2.5))
  log.close()
  directory = tmp_path / "tensorboard" / "beta=1.0"
  [events] = [n for n in os.listdir(directory) if n.startswith("events")]
  assert os.listdir(directory) == [events]
  tags = _tensorboard_scalars(directory, every_tag=True)
  assert tags["loss"] == [(1, 3.0)] and tags["hparam/test_nll"][0][1] == 2.5
  assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(tags)


def _tensorboard_scalars(directory, every_tag=False) -> dict[str, list]:
  """{tag: [(step, value), ...]} of the event files in ``directory``, read
  with tensorboardX's protos (TFRecord framing: length, crc, data, crc)."""
  from tensorboardX.proto import event_pb2

  out = {}
  for name in sorted(os.listdir(directory)):
    if not name.startswith("events.out.tfevents"):
      continue
    with open(os.path.join(directory, name), "rb") as f:
      blob = f.read()
    pos = 0
    while pos < len(blob):
      length = int.from_bytes(blob[pos : pos + 8], "little")
      event = event_pb2.Event.FromString(blob[pos + 12 : pos + 12 + length])
      pos += 16 + length
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out.setdefault(value.tag, []).append((event.step, value.simple_value))
        elif every_tag:
          out.setdefault(value.tag, []).append((event.step, None))
  return out
