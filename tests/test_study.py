"""The reconstruction-term study: its config, its numbers and its report."""

import fcntl
import json
import math
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from experiments.configs import study as study_configs
from tests.runs import tiny_config
from vae_jax import sweep
from vae_jax.sweep import study
from vae_jax.sweep import study_report
from vae_jax.train import checkpoints
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import program
from vae_jax.train import results
from vae_jax.train import group as group_lib

# Minutes of compiling together: scheduled first (tests/conftest.py).
pytestmark = pytest.mark.heavy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_study(**changes) -> ml_collections.ConfigDict:
  """Every arm on the 8x8 digits, two fixed sigma^2: seconds. One seed, but
  two for the arms whose seeds a test reads: the continuous Bernoulli (the
  table's mean and sd) and the learned Gaussian (seed 1's model by hand)."""
  c = study_configs.get_config()
  c.base = tiny_config(
    num_epochs=3, eval_every=3, checkpoint_every=3, nll_samples=16
  )
  c.seeds = (0,)
  c.seeds_by_arm = ml_collections.ConfigDict(
    dict(continuous_bernoulli=(0, 1), gaussian_learned=(0, 1))
  )
  c.fixed_sigma2 = (0.01, 0.1)
  c.update(changes)
  return c


_make_mesh = program.make_mesh


def one_device_mesh(devices=None) -> jax.sharding.Mesh:
  """program.make_mesh as on a machine with one device: conftest gives 8
  CPU devices, over which every group would be padded to 8 members."""
  return _make_mesh(jax.devices()[:1] if devices is None else devices)


# --------------------------------------------------------------------------
# Pieces, checked by hand.


def test_stat_is_mean_and_sample_sd_over_the_numbers_there():
  s = study.stat([1.0, 2.0, 3.0])
  assert (s.mean, s.sd, s.n) == (2.0, 1.0, 3)
  s = study.stat([4.0, None, float("nan"), 6.0])
  assert (s.mean, s.n) == (5.0, 2)
  assert s.sd == pytest.approx(np.sqrt(2.0))
  assert study.stat([7.0]) == study.Stat(7.0, None, 1)
  assert study.stat([None]) == study.Stat(None, None, 0)


def test_arm_sweep_is_the_base_with_the_arms_keys_over_the_seeds():
  c = study_configs.get_config()
  fixed = study.arm_sweep(c, "gaussian_fixed")
  assert dict(fixed.axes) == dict(seed=(0, 1, 2), sigma2=c.fixed_sigma2)
  assert fixed.base.likelihood == "gaussian"
  assert fixed.base.sigma2_mode == "fixed"
  assert fixed.base.protocol == "continuous"
  binary = study.arm_sweep(c, "bernoulli_binary")
  assert dict(binary.axes) == dict(seed=(0, 1, 2))
  assert (binary.base.protocol, binary.base.likelihood) == (
    "dynamic",
    "bernoulli",
  )
  # The masses on levels see the levels; the Laplace the dequantized ones.
  for name in ("discretized_logistic", "discretized_logistic_mixture"):
    arm = study.arm_sweep(c, name)
    assert (arm.base.protocol, arm.base.likelihood) == ("levels", name)
    assert dict(arm.axes) == dict(seed=c.seeds_by_arm[name])  # costly: fewer
  laplace = study.arm_sweep(c, "laplace_learned").base
  assert (laplace.protocol, laplace.likelihood, laplace.sigma2_mode) == (
    "continuous",
    "laplace",
    "learned",
  )
  # Everything else is the base's, and the study's base is untouched.
  assert binary.base.num_epochs == c.base.num_epochs
  assert c.base.likelihood == "bernoulli" and c.base.protocol == "dynamic"
  study.validate(c)
  study.validate(study_configs.get_config("long"))
  mnist = study_configs.get_config("mnist")
  study.validate(mnist)
  assert mnist.base.source == "mnist" and mnist.arms == c.arms


@pytest.mark.parametrize(
  "change,match",
  [
    (dict(arms=("gaussian", "bernoulli_grey")), "config.arms"),
    (dict(arms=()), "config.arms"),
    (dict(seeds=()), "config.seeds"),
    (dict(seeds=(1, 1)), "config.seeds"),
    (dict(fixed_sigma2=()), "config.fixed_sigma2"),
    (dict(fixed_sigma2=(0.1, -1.0)), "gaussian_fixed"),
    (dict(seeds_by_arm=dict(gaussian=(0,))), "config.seeds_by_arm names no"),
    (
      dict(seeds_by_arm=dict(laplace_learned=())),
      "config.seeds_by_arm.laplace_learned",
    ),
  ],
)
def test_bad_study_configs_are_refused_by_name(change, match):
  c = study_configs.get_config()
  for key, value in change.items():
    c[key] = (
      ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    )
  with pytest.raises(config_lib.ConfigError, match=match):
    study.validate(c)


def test_unknown_study_key_is_refused():
  c = study_configs.get_config()
  c.arm = "typo"
  with pytest.raises(config_lib.ConfigError, match="unknown"):
    study.validate(c)


def test_the_command_refuses_a_bad_config_in_one_line(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.study",
      f"--workdir={tmp_path}",
      "--compilation_cache=",
      "--config.arms=('bernoulli',)",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 1
  assert out.stderr.strip().startswith("error: ")
  assert "config.arms" in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


def test_readme_shows_the_headline_of_docs_study():
  def block(path):
    with open(os.path.join(ROOT, path)) as f:
      text = f.read()
    begin = text.index(study_report.HEADLINE_BEGIN)
    end = text.index(study_report.HEADLINE_END)
    return text[begin:end]

  assert block("README.md") == block("docs/study.md")


# --------------------------------------------------------------------------
# A whole tiny study.


@pytest.fixture(scope="module")
def tiny(shared_dir):
  # One tiny study a session: the first xdist worker to get here trains it;
  # a worker that comes later waits for the lock and reads every arm back
  # (a study resumes arm by arm), then decodes as the first did.
  workdir = os.path.join(shared_dir, "tiny-study")
  c = tiny_study()
  with (
    open(workdir + ".lock", "w") as lock,
    pytest.MonkeyPatch.context() as patch,
  ):
    fcntl.flock(lock, fcntl.LOCK_EX)
    # The study as a one-device machine runs it: a group of one member is
    # a plain program, without the loop over members or 8-way padding, so
    # it compiles and trains in less time. (The tfds study below runs on
    # all 8 devices: a padded, sharded group trains and decodes there.)
    patch.setattr(program, "make_mesh", one_device_mesh)
    by_arm = study.run(c, workdir)
    decoded = {name: study.decoded(c, name, workdir) for name in c.arms}
    cells = study.cells(c, by_arm, decoded)
    report = os.path.join(workdir, "docs", "study.md")
    study_report.write(
      report,
      c,
      cells,
      command="python -m experiments.study (test)",
      seconds=1.0,
      provenance=results.provenance(),
    )
    with open(report) as f:
      text = f.read()
  return c, workdir, by_arm, cells, text


@pytest.mark.slow
def test_every_arm_trains_its_seeds_with_its_decoder(tiny):
  c, _, by_arm, cells, _ = tiny
  assert list(by_arm) == list(study.ARMS)
  for name, rows in by_arm.items():
    keys = study.ARMS[name].keys
    sigma2s = c.fixed_sigma2 if name == "gaussian_fixed" else (None,)
    seeds = study.arm_seeds(c, name)
    assert seeds == c.seeds_by_arm.get(name, c.seeds)
    assert len(rows) == len(seeds) * len(sigma2s)
    assert sorted({r.seed for r in rows}) == list(seeds)
    for r in rows:
      assert r.likelihood == keys["likelihood"]
      assert r.data_protocol == keys["protocol"]
      assert r.sigma2_mode == keys.get("sigma2_mode", "fixed")
      assert r.epochs == c.base.num_epochs and not r.diverged
      # bits/dim exactly where the decoder is a likelihood of its data.
      assert (r.bits_per_dim is None) == (name == "bernoulli_grey")
  # One row per arm, the fixed Gaussian once per sigma^2.
  assert [cell.sigma2 for cell in cells if cell.arm == "gaussian_fixed"] == [
    0.01,
    0.1,
  ]
  assert len(cells) == len(study.ARMS) + 1


@pytest.mark.slow
def test_the_8_bit_decoders_stand_on_the_grey_levels_scale(tiny):
  # Exact NLL / (D ln 2) for the masses on the levels; the Laplace's a bound,
  # log 17 per dimension added, like the Gaussians (8x8 digits: D = 64).
  _, _, by_arm, _, _ = tiny
  for name, offset in (
    ("discretized_logistic", 0.0),
    ("discretized_logistic_mixture", 0.0),
    ("laplace_learned", math.log(17)),
  ):
    for r in by_arm[name]:
      assert np.isfinite(r.test_nll)
      assert r.bits_per_dim == pytest.approx(
        (r.test_nll + 64 * offset) / (64 * math.log(2)), rel=1e-6
      )
  assert all(r.eval_sigma2 > 0 for r in by_arm["laplace_learned"])


@pytest.mark.slow
def test_the_table_is_mean_and_sd_of_each_arms_results_on_disk(tiny):
  _, workdir, _, _, text = tiny
  # Independent of the study's code: each arm's results.json, numpy.
  path = os.path.join(
    study.arm_workdir(workdir, "continuous_bernoulli"), "results.json"
  )
  with open(path) as f:
    rows = json.load(f)
  rate = np.array([r["test_rate"] for r in rows])
  bpd = np.array([r["bits_per_dim"] for r in rows])
  line = next(
    row
    for row in text.splitlines()
    if row.startswith("| continuous Bernoulli |")
  )
  cells = [x.strip() for x in line.strip("|").split("|")]
  columns = [name for name, _ in study.COLUMNS]
  assert cells[1 + columns.index("bits/dim")] == (
    f"{bpd.mean():.3f} ± {bpd.std(ddof=1):.3f}"
  )
  assert cells[1 + columns.index("rate (nats)")] == (
    f"{rate.mean():.1f} ± {rate.std(ddof=1):.1f}"
  )
  grey = next(
    row
    for row in text.splitlines()
    if row.startswith("| Bernoulli on grey levels |")
  )
  assert grey.split("|")[2].strip() == "n/a"


@pytest.mark.slow
def test_pixel_mse_is_that_of_the_restored_models_reconstructions(tiny):
  c, workdir, _, cells, _ = tiny
  cell = next(x for x in cells if x.arm == "gaussian_learned")
  # Seed 1's model by hand: its checkpoint, then the MLP in numpy float64.
  group = group_lib.Group.build(
    sweep.members(study.arm_sweep(c, "gaussian_learned")),
    mesh=one_device_mesh(),
  )
  dataset = group.dataset
  ckpt = checkpoints.Checkpointer(
    os.path.join(
      study.arm_workdir(workdir, "gaussian_learned"),
      "groups",
      "000",
      "checkpoints",
    )
  )
  epoch, state = ckpt.restore_latest(group.state)
  ckpt.close()
  assert epoch == c.base.num_epochs
  m = [r.seed for r in cell.results].index(1)
  p = jax.tree.map(
    lambda v: np.asarray(v[m], np.float64), program.gather(state.train.params)
  )
  x = data.evaluation_images(dataset).reshape(len(dataset.test), -1)
  dense = lambda h, layer: h @ layer["kernel"] + layer["bias"]
  enc = [p["encoder"]["layers"][i] for i in (0, 1)]
  dec = [p["decoder"]["layers"][i] for i in (0, 1)]
  mean = dense(np.maximum(dense(x, enc[0]), 0), enc[1])[:, : c.base.latent_dim]
  logits = dense(np.maximum(dense(mean, dec[0]), 0), dec[1])
  mse = np.mean((1 / (1 + np.exp(-logits)) - x) ** 2)
  assert cell.decoded[m].pixel_mse == pytest.approx(mse, rel=1e-5)
  np.testing.assert_allclose(
    cell.decoded[m].reconstructions.reshape(8, -1),
    1 / (1 + np.exp(-logits[:8])),
    atol=1e-5,
  )


@pytest.mark.slow
def test_the_literature_sentences_follow_the_numbers(tiny):
  _, _, _, cells, text = tiny

  def mean(arm, column, sigma2=None):
    cell = next(x for x in cells if x.arm == arm and x.sigma2 == sigma2)
    return np.mean([getattr(r, column) for r in cell.results])

  cb = np.mean(
    [
      m.pixel_mse
      for m in next(x for x in cells if x.arm == "continuous_bernoulli").decoded
    ]
  )
  grey = np.mean(
    [
      m.pixel_mse
      for m in next(x for x in cells if x.arm == "bernoulli_grey").decoded
    ]
  )
  assert f"{cb:.4f} for the continuous Bernoulli against {grey:.4f}" in text
  assert ("the direction the paper reports" in text) == (cb < grey)
  optimal = mean("gaussian_optimal", "bits_per_dim")
  fixed = [mean("gaussian_fixed", "bits_per_dim", s) for s in (0.01, 0.1)]
  assert f"the optimal sigma^2 reaches {optimal:.3f} bits/dim" in text
  assert ("better than every fixed value" in text) == (optimal < min(fixed))
  # The 8-bit decoders: the best row on the grey scale, by its own mean.
  single = mean("discretized_logistic", "bits_per_dim")
  mixture = mean("discretized_logistic_mixture", "bits_per_dim")
  assert f"the discretized logistic {single:.3f} and the mixture" in text
  assert f"the mixture {mixture:.3f};" in text
  grey = [
    (mean(x.arm, "bits_per_dim", x.sigma2), x)
    for x in cells
    if x.results[0].data_protocol in ("continuous", "levels")
    and x.results[0].bits_per_dim is not None
  ]
  best_bits, best = min(grey, key=lambda p: p[0])
  assert f"digits, {best_bits:.3f}, is that of the {best.label}" in text
  assert ("the literature's choice for 8-bit images." in text) == (
    best.arm.startswith("discretized")
  )
  assert ("its extra components per pixel pay." in text) == (mixture < single)
  laplace = mean("laplace_learned", "bits_per_dim")
  gaussian = mean("gaussian_learned", "bits_per_dim")
  assert f"the Laplace reaches {laplace:.3f} bits/dim against the " in text
  assert (f"{gaussian - laplace:.3f} better" in text) == (laplace < gaussian)
  # The grids' grey pixels, by hand, seed 0 as in the figure.
  first = lambda arm: next(x for x in cells if x.arm == arm).decoded[0]
  share = lambda a: np.mean((a > 0.1) & (a < 0.9))
  for arm in ("laplace_learned", "discretized_logistic_mixture"):
    d = first(arm)
    label = study.ARMS[arm].label
    assert (
      f"{label}: {100 * share(d.reconstructions):.1f}% and "
      f"{100 * share(d.samples):.1f}%"
    ) in text
  sharper = share(first("laplace_learned").reconstructions) < share(
    first("gaussian_learned").reconstructions
  )
  assert ("the sharper look L1 is chosen for." in text) == sharper


@pytest.mark.slow
def test_the_report_has_its_figure_and_every_arms_meaning(tiny):
  c, workdir, _, cells, text = tiny
  png = os.path.join(workdir, "docs", "figures", study_report.GRIDS)
  with Image.open(png) as image:
    width, height = image.size
  assert width > 300 and height > 300
  assert f"![reconstructions and samples](figures/{study_report.GRIDS})" in text
  for name in c.arms:
    assert study.ARMS[name].meaning in text
  assert study_report.headline(cells) in text
  assert re.search(r"took \d+ min \d\d s", text)


@pytest.mark.slow
def test_the_time_table_sums_each_arms_group_seconds_on_disk(tiny):
  c, workdir, _, _, text = tiny
  section = text[text.index("## Where the time went") :]
  total_train = 0.0
  for name in c.arms:
    path = os.path.join(study.arm_workdir(workdir, name), "results.json")
    with open(path) as f:
      rows = json.load(f)
    # One record of each group: its members record the same seconds.
    groups = {}
    for r in rows:
      groups.setdefault(round(r["train_seconds"], 9), r)
    train = sum(groups)
    total_train += train
    line = next(
      row
      for row in section.splitlines()
      if row.startswith(f"| {study.ARMS[name].label} |")
    )
    models, seconds = [x.strip() for x in line.strip("|").split("|")][1:3]
    assert int(models) == len(rows)
    assert abs(int(seconds) - train) <= 0.5 + 1e-6
  total = re.search(r"\| all \| (\d+) \| (\d+) \|", section)
  assert total and abs(int(total[2]) - total_train) <= 0.5 + 1e-6


@pytest.mark.slow
def test_a_second_run_reads_every_arm_back(tiny):
  c, workdir, by_arm, _, _ = tiny
  again = study.run(c, workdir)
  plain = lambda rows: json.loads(json.dumps([r.to_dict() for r in rows]))
  for name in c.arms:
    assert plain(by_arm[name]) == plain(again[name])


@pytest.mark.slow
def test_a_study_on_a_tfds_source_trains_and_decodes(tmp_path):
  # Decoding builds each arm's group as training did: from the config, its
  # data_dir included (tfds's mock data stands in for a prepared data set).
  c = tiny_study(arms=("bernoulli_binary",), seeds=(0,))
  c.base.update(
    source="tfds:mnist",
    data_dir=str(tmp_path / "tfds"),
    architecture="mlp",
    num_epochs=1,
    eval_every=1,
    checkpoint_every=1,
    batch_size=16,
    nll_samples=8,
    eval_batch_size=16,
  )
  workdir = str(tmp_path / "study")
  with tfds.testing.mock_data(num_examples=32):
    [result] = study.run(c, workdir)["bernoulli_binary"]
    [decoded] = study.decoded(c, "bernoulli_binary", workdir, count=4)
  assert result.source == "tfds:mnist" and result.num_train == 32
  assert decoded.inputs.shape == decoded.samples.shape == (4, 28, 28, 1)
  assert 0 < decoded.pixel_mse < 1
