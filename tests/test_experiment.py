"""Whole runs on the 8x8 digits: outputs, bounds, resume, failure, the CLI."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from tests.runs import tiny_config
from tests.runs import train
from vae_jax.train import config as config_lib
from vae_jax.train import engine
from vae_jax.train import files
from vae_jax.train import logs
from vae_jax.train import program
from vae_jax.train import progress
from vae_jax.train import group as group_lib
from vae_jax.train import member as member_lib

# End to end: every test here trains models (deselect with -m 'not slow').
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("seconds", "examples_per_second", "wall_time")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  return workdir, train(tiny_config(), workdir)


def _final_params(workdir):
  _, state = _group(tiny_config()).restore(workdir)
  return state.train


def _group(cfg):
  """A run's group: one member."""
  return group_lib.Group.build([member_lib.Member(cfg)])


def test_run_writes_every_output(finished_run):
  workdir, summary = finished_run
  for key in (
    "test_elbo",
    "test_rate",
    "test_distortion",
    "test_nll",
    "nll_samples",
    "bits_per_dim",
    "active_units",
    "data_protocol",
    "train_seconds",
    "examples_per_second",
  ):
    assert summary[key] is not None, key
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["latent_dim"] == 2
  records = logs.read_records(os.path.join(workdir, "metrics.jsonl"))
  assert [r["epoch"] for r in records] == [1, 2, 3, 4]
  assert "test_elbo" in records[1] and "test_elbo" not in records[0]
  assert records[-1]["step"] == 4 * (1497 // 100)
  assert any(
    f.startswith("events.out.tfevents")
    for f in os.listdir(os.path.join(workdir, "tensorboard"))
  )
  for name in ("reconstructions", "samples", "curves", "latent_traversal"):
    with Image.open(os.path.join(workdir, "figures", f"{name}.png")) as im:
      assert im.size[0] > 100 and im.size[1] > 100
  assert summary["data_protocol"] == "dynamic"
  assert summary["nll_samples"] == 64 and summary["num_test"] == 300


def test_summary_numbers_hang_together(finished_run):
  _, s = finished_run
  np.testing.assert_allclose(
    s["test_elbo"], -(s["test_rate"] + s["test_distortion"]), rtol=1e-6
  )
  # Burda et al.: the importance-weighted bound is no looser than the ELBO.
  assert s["test_nll"] <= -s["test_elbo"] + 0.05
  np.testing.assert_allclose(
    s["bits_per_dim"], s["test_nll"] / (64 * math.log(2)), rtol=1e-6
  )
  np.testing.assert_allclose(sum(s["kl_per_dim"]), s["test_rate"], rtol=1e-5)
  assert 0 <= s["active_units"] <= 2


def test_interrupted_run_resumes_to_the_same_parameters(
  finished_run, tmp_path, monkeypatch
):
  workdir = str(tmp_path)
  real_write = logs.MetricsLog.write

  def write(self, records):
    if records[0]["epoch"] == 3:  # killed after epoch 3 ran, before its save
      raise KeyboardInterrupt
    real_write(self, records)

  monkeypatch.setattr(logs.MetricsLog, "write", write)
  with pytest.raises(KeyboardInterrupt):
    train(tiny_config(), workdir)
  monkeypatch.setattr(logs.MetricsLog, "write", real_write)
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  summary = train(tiny_config(), workdir)

  reference_dir, reference = finished_run
  a, b = _final_params(workdir), _final_params(reference_dir)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)  # bit-identical
  for key in ("test_elbo", "test_nll", "active_units"):
    assert summary[key] == reference[key]
  strip = lambda rs: [
    {k: v for k, v in r.items() if k not in TIMING} for r in rs
  ]
  assert strip(
    logs.read_records(os.path.join(workdir, "metrics.jsonl"))
  ) == strip(logs.read_records(os.path.join(reference_dir, "metrics.jsonl")))


def test_resume_with_a_different_config_is_refused(finished_run):
  workdir, _ = finished_run
  with pytest.raises(config_lib.ConfigError, match="beta: saved 1.0, now 2.0"):
    train(tiny_config(beta=2.0), workdir)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
  tmp_path, monkeypatch
):
  real = program.make_epoch

  def poisoned(*args, **kwargs):
    epoch_fn, calls = real(*args, **kwargs), []

    def run(state, raw, hparams):
      calls.append(1)
      if len(calls) == 3:  # epoch 3 meets an infinite KL weight
        hparams = dict(hparams, beta=hparams["beta"] * np.inf)
      return epoch_fn(state, raw, hparams)

    return run

  monkeypatch.setattr(program, "make_epoch", poisoned)
  workdir = str(tmp_path)
  with pytest.raises(
    engine.NonFiniteLossError, match=r"epoch 3, step 29;.*checkpoint: epoch 2"
  ):
    train(tiny_config(), workdir)
  epoch, state = _group(tiny_config()).restore(workdir)
  assert epoch == 2
  state = state.train
  assert int(state.step[0]) == 2 * 14
  assert all(np.isfinite(l).all() for l in jax.tree.leaves(state.params))


def _likelihood_config(likelihood, mode, protocol):
  return tiny_config(
    likelihood=likelihood,
    sigma2_mode=mode,
    protocol=protocol,
    num_epochs=2,
    latent_dim=3,
    architecture="conv",
    hidden_sizes=(4, 8),
    sigma2=0.1,
    min_sigma2=1e-3,
  )


@pytest.mark.parametrize(
  "likelihood,mode,protocol",
  [
    ("gaussian", "optimal", "continuous"),
    ("gaussian", "learned", "continuous"),
    ("continuous_bernoulli", "fixed", "continuous"),
    ("bernoulli", "fixed", "static"),
    ("laplace", "learned", "continuous"),
    ("discretized_logistic", "fixed", "levels"),
    ("discretized_logistic_mixture", "fixed", "levels"),
  ],
)
def test_other_likelihoods_train_and_report_honest_units(
  tmp_path, likelihood, mode, protocol
):
  cfg = _likelihood_config(likelihood, mode, protocol)
  s = train(cfg, str(tmp_path))
  assert np.isfinite(s["test_nll"]) and s["test_nll"] <= -s["test_elbo"] + 0.1
  # Masses on their data: exact; densities on dequantized data: a bound.
  offset = 0.0 if protocol in ("static", "levels") else math.log(17)
  np.testing.assert_allclose(
    s["bits_per_dim"],
    (s["test_nll"] + 64 * offset) / (64 * math.log(2)),
    rtol=1e-6,
  )
  if mode == "optimal":
    assert 1e-3 <= s["eval_sigma2"] < 0.25


def test_a_density_on_binary_data_reports_no_bits_per_dim(tmp_path):
  # The learned Gaussian above, on binarized digits: the same model, so only
  # its epoch (which binarizes) is compiled again.
  cfg = _likelihood_config("gaussian", "learned", "dynamic")
  s = train(cfg, str(tmp_path))
  assert s["data_protocol"] == "dynamic" and np.isfinite(s["test_nll"])
  assert s["bits_per_dim"] is None


def test_tfds_source_through_mock_data(tmp_path):
  cfg = tiny_config(
    source="tfds:mnist",
    architecture="mlp",
    num_epochs=1,
    batch_size=16,
    nll_samples=8,
    eval_batch_size=16,
  )
  with tfds.testing.mock_data(num_examples=32):
    s = train(cfg, str(tmp_path))
  assert s["source"] == "tfds:mnist" and s["num_train"] == 32
  assert s["num_test"] == 32 and np.isfinite(s["test_nll"])


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("beta", -1.0, "config.beta must be a finite number >= 0"),
    ("likelihood", "poisson", "config.likelihood must be one of"),
    ("hidden_sizes", (), "config.hidden_sizes"),
    ("source", "cifar", "config.source"),
    ("batch_size", 0, "config.batch_size"),
  ],
)
def test_bad_config_values_are_named(key, value, match):
  cfg = tiny_config()
  cfg[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(cfg)


@pytest.mark.parametrize(
  "changes,match",
  [
    (
      dict(likelihood="discretized_logistic", protocol="continuous"),
      "config.likelihood='discretized_logistic' does not fit "
      "config.protocol='continuous'",
    ),
    (
      dict(likelihood="gaussian", protocol="levels"),
      "protocol 'levels' is for the masses on grey levels",
    ),
    (
      dict(likelihood="laplace", protocol="continuous", sigma2_mode="optimal"),
      "config.sigma2_mode='optimal' does not apply to "
      "config.likelihood='laplace'",
    ),
    (dict(mixture_components=0), "config.mixture_components"),
  ],
)
def test_a_decoder_that_does_not_fit_its_data_is_refused(changes, match):
  cfg = tiny_config(**changes)
  with pytest.raises(config_lib.ConfigError, match=re.escape(match)):
    config_lib.validate(cfg)


def test_unknown_and_missing_config_keys_are_named():
  cfg = tiny_config()
  cfg.betta = 4.0
  with pytest.raises(config_lib.ConfigError, match="unknown.*'betta'"):
    config_lib.validate(cfg)
  cfg = tiny_config()
  del cfg["beta"]
  with pytest.raises(config_lib.ConfigError, match="missing.*'beta'"):
    config_lib.validate(cfg)


@pytest.fixture(scope="module")
def cli_cache(shared_dir):
  """The compilation cache of this session's training processes (here and
  in test_workdir.py, whose RUN trains CLI_RUN's model): the first compiles,
  the others read its programs."""
  return os.path.join(shared_dir, "cli-jax-cache")


def _cli(workdir, *flags, cache="", config="digits.py", wait=True):
  cmd = [
    sys.executable,
    "-m",
    "experiments.train",
    f"--config=experiments/configs/{config}",
    f"--workdir={workdir}",
    f"--compilation_cache={cache}",
    "--config.progress_bar=False",
    *flags,
  ]
  if not wait:
    return subprocess.Popen(
      cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
  return subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=300
  )


def test_cli_rejects_an_unknown_override_by_name(tmp_path):
  result = _cli(tmp_path / "w", "--config.betta=4")
  assert result.returncode != 0
  assert "betta" in result.stderr and 'Did you mean "beta"' in result.stderr


# default.py's config with these overrides: the CLI runs below train it (and
# test_workdir.py's the same model, RUN: one compilation cache serves both).
CLI_RUN = (
  "--config.source=digits",
  "--config.num_epochs=6",
  "--config.checkpoint_every=1",
  "--config.eval_every=3",
  "--config.beta=4",
  "--config.hidden_sizes=(64,)",
  "--config.latent_dim=2",
  "--config.batch_size=100",
  "--config.nll_samples=16",
)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cli_cache):
  """One run through the CLI, never stopped: the script by path, from
  another working directory, its default config found beside it. Returns
  (folder, the finished process)."""
  base = tmp_path_factory.mktemp("cli")
  elsewhere = base / "elsewhere"
  elsewhere.mkdir()
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "train.py"),
      *CLI_RUN,
      f"--workdir={base / 'whole'}",
      f"--compilation_cache={cli_cache}",
    ],
    cwd=elsewhere,
    capture_output=True,
    text=True,
    timeout=300,
  )
  return base, result


def test_cli_runs_from_any_working_directory(cli_run):
  base, result = cli_run
  assert result.returncode == 0, result.stderr[-2000:]
  assert "\r" not in result.stdout  # progress on, redirected: plain lines
  assert "epoch 1/6" in result.stdout and "epoch 6/6" in result.stdout
  with open(base / "whole" / "config.json") as f:
    saved = json.load(f)
  assert saved["likelihood"] == "bernoulli"  # default.py's
  assert saved["progress_bar"] is True


def test_cli_killed_at_any_point_resumes_bit_identically(cli_run, cli_cache):
  """SIGKILL a training process mid-run, rerun the command, compare with a
  run never stopped: same final parameters bit for bit, and overrides kept."""
  base, reference = cli_run
  assert reference.returncode == 0, reference.stderr[-2000:]
  killed = base / "killed"
  proc = _cli(
    killed, *CLI_RUN, cache=cli_cache, config="default.py", wait=False
  )
  first = killed / "checkpoints" / "2"
  deadline = time.time() + 240
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert first.exists(), "no checkpoint before the kill"
  assert not (killed / "summary.json").exists(), "finished before the kill"
  result = _cli(killed, *CLI_RUN, cache=cli_cache, config="default.py")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "summary.json" in result.stdout
  with open(killed / "config.json") as f:
    saved = json.load(f)
  assert saved["beta"] == 4.0 and saved["hidden_sizes"] == [64]
  whole = base / "whole"
  with open(whole / "summary.json") as f, open(killed / "summary.json") as g:
    a, b = json.load(f), json.load(g)
  for key in ("test_elbo", "test_nll", "test_rate", "active_units", "steps"):
    assert a[key] == b[key], key


@pytest.mark.parametrize("name", ["default", "digits", "burda2016"])
def test_shipped_configs_are_valid(name):
  module = __import__(f"experiments.configs.{name}", fromlist=["get_config"])
  config_lib.validate(module.get_config())


def test_burda_config_follows_the_paper():
  from experiments.configs import burda2016

  c = burda2016.get_config()
  assert (
    c.source,
    c.protocol,
    tuple(c.hidden_sizes),
    c.activation,
    c.latent_dim,
    c.batch_size,
    c.adam_eps,
    c.nll_samples,
  ) == ("mnist", "dynamic", (200, 200), "tanh", 50, 20, 1e-4, 5000)
  assert c.train_examples == 59_600  # the last 400 held out, as their code
  # 3^i epochs for i = 0..7 is the whole run.
  assert c.num_epochs == sum(3**i for i in range(8)) == 3280


def test_metrics_log_drops_epochs_past_the_checkpoint(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  path.write_text(
    "".join(json.dumps({"epoch": e, "loss": 1.0 / e}) + "\n" for e in (1, 2, 3))
    + '{"epoch": 4, "lo'
  )  # cut
  log = logs.MetricsLog(str(tmp_path), last_epoch=2)
  log.write([{"epoch": 3, "loss": 7.0}])
  log.close()
  assert logs.read_records(str(path)) == [
    {"epoch": 1, "loss": 1.0},
    {"epoch": 2, "loss": 0.5},
    {"epoch": 3, "loss": 7.0},
  ]
  path.write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
  assert logs.read_records(str(path)) == [{"epoch": 1}, {"epoch": 2}]
  assert "line 2 is not a JSON record; skipped" in caplog.text


def test_atomic_write_leaves_the_old_file_when_interrupted(
  tmp_path, monkeypatch
):
  path = str(tmp_path / "summary.json")
  files.write_json(path, {"a": 1})

  def crash(*_):
    raise KeyboardInterrupt

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(KeyboardInterrupt):
    files.write_json(path, {"a": 2})
  with open(path) as f:
    assert json.load(f) == {"a": 1}
  assert os.listdir(tmp_path) == ["summary.json"]  # no temporary left


def test_summary_carries_its_provenance(finished_run):
  _, summary = finished_run
  p = summary["provenance"]
  assert p["jax"] == jax.__version__ and p["platform"] == "cpu"
  assert p["vae_jax"] and p["flax"] and p["optax"] and p["date"][:2] == "20"
  # This test runs from a git checkout: its commit (40 hex digits).
  assert p["git_commit"] is None or len(p["git_commit"].split("+")[0]) == 40
  assert summary["units"].startswith("nats per example")
  assert summary["timed_epochs"] == 4 and summary["name"] == ""


def test_redirected_progress_is_one_plain_line_per_epoch(capsys):
  bar = progress.Epochs(0, 3, enabled=True)  # stderr is not a terminal here
  for epoch in (1, 2, 3):
    bar.update(epoch, loss=f"{10.0 / epoch:.2f}")
  bar.close()
  out = capsys.readouterr()
  assert "\r" not in out.out + out.err
  assert out.out.splitlines() == [
    "epoch 1/3  loss 10.00",
    "epoch 2/3  loss 5.00",
    "epoch 3/3  loss 3.33",
  ]
