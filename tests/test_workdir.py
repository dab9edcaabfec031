"""The workdir contract: never lose a run, never misreport one, and every
user mistake at either command is one line.

Processes that are killed or run twice are subprocesses with timeouts.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from experiments.configs import sweep as sweep_configs
from tests.runs import tiny_config
from tests.runs import train
from vae_jax import sweep
from vae_jax.train import checkpoints
from vae_jax.train import config as config_lib
from vae_jax.train import engine
from vae_jax.train import logs
from vae_jax.train import group as group_lib
from vae_jax.train import member as member_lib
from vae_jax.train import training
from vae_jax.train import workdir as workdir_lib

# End to end: every test here trains models or starts processes.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARYING = (
  "train_seconds",
  "eval_seconds",
  "examples_per_second",
  "provenance",
  "timed_epochs",
)


def _same(a: dict, b: dict) -> None:
  for key in a:
    if key not in VARYING:
      assert a[key] == b[key], key


def _params(workdir, config):
  group = group_lib.Group.build([member_lib.Member(config)])
  _, state = group.restore(workdir)
  return state.train.params


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("whole")
  return str(workdir), train(tiny_config(), workdir)


# --------------------------------------------------------------------------
# Checkpoints: a bad newest one falls back to the one before.


def _garbage(path):
  for root, _, names in os.walk(path):
    for name in names:
      with open(os.path.join(root, name), "wb") as f:
        f.write(os.urandom(64))


def _truncate(path):
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      os.truncate(full, os.path.getsize(full) // 2)


def _empty(path):
  shutil.rmtree(path)
  os.mkdir(path)


@pytest.mark.parametrize("damage", [_garbage, _truncate, _empty])
def test_a_bad_newest_checkpoint_falls_back_and_ends_the_same(
  finished, tmp_path, caplog, damage
):
  whole, reference = finished
  workdir = str(tmp_path / "run")
  shutil.copytree(whole, workdir)
  os.remove(os.path.join(workdir, "summary.json"))
  damage(os.path.join(workdir, "checkpoints", "4"))
  resumed = train(tiny_config(), workdir)
  assert "/checkpoints/4 could not be restored" in caplog.text
  # Kept, not deleted; epoch 4 retrained from epoch 3.
  assert os.path.isdir(os.path.join(workdir, "checkpoints.unreadable", "4"))
  _same(resumed, reference)
  for a, b in zip(
    jax.tree.leaves(_params(workdir, tiny_config())),
    jax.tree.leaves(_params(whole, tiny_config())),
  ):
    np.testing.assert_array_equal(a, b)  # bit for bit
  records = logs.read_records(os.path.join(workdir, "metrics.jsonl"))
  assert [r["epoch"] for r in records] == [1, 2, 3, 4]


def test_no_checkpoint_that_restores_is_one_error(finished, tmp_path):
  whole, _ = finished
  workdir = str(tmp_path / "run")
  shutil.copytree(whole, workdir)
  for epoch in ("3", "4"):
    _garbage(os.path.join(workdir, "checkpoints", epoch))
  with pytest.raises(
    checkpoints.CheckpointError,
    match=r"no checkpoint in .*checkpoints could be restored",
  ):
    train(tiny_config(), workdir)


# --------------------------------------------------------------------------
# Resume rules.


def test_num_epochs_may_not_change_under_a_cosine_schedule(finished, tmp_path):
  workdir = str(tmp_path / "cos")
  train(tiny_config(lr_schedule="cosine", num_epochs=2), workdir)
  with pytest.raises(
    config_lib.ConfigError, match=r"num_epochs: saved 2, now 4 \(the cosine"
  ):
    train(tiny_config(lr_schedule="cosine", num_epochs=4), workdir)
  # Burda's schedule has fixed boundaries: num_epochs does not enter it.
  a, b = (
    training.learning_rate_schedule(
      "burda", 1e-3, steps_per_epoch=14, num_epochs=n
    )
    for n in (4, 8)
  )
  steps = np.arange(0, 14 * 8)
  np.testing.assert_array_equal(jax.vmap(a)(steps), jax.vmap(b)(steps))
  saved = tiny_config(lr_schedule="burda").to_dict()
  assert workdir_lib.resume_conflicts(saved, dict(saved, num_epochs=8)) == []


def test_fewer_epochs_than_trained_is_refused(finished):
  whole, _ = finished
  with pytest.raises(
    config_lib.ConfigError,
    match=r"has trained 4 epochs, more than num_epochs=2",
  ):
    train(tiny_config(num_epochs=2), whole)


def test_a_failed_start_does_not_lock_its_workdir(tmp_path, caplog):
  # sigma^2 = 1e-45: every loss is infinite, the run stops in epoch 1,
  # before any checkpoint. The corrected config may then start there.
  workdir = str(tmp_path / "run")
  bad = tiny_config(likelihood="gaussian", protocol="continuous", sigma2=1e-45)
  with pytest.raises(engine.NonFiniteLossError, match="epoch 1"):
    train(bad, workdir)
  good = tiny_config(
    likelihood="gaussian", protocol="continuous", sigma2=0.1, num_epochs=1
  )
  caplog.clear()
  assert np.isfinite(train(good, workdir)["test_nll"])
  assert "holds a config but no checkpoint" in caplog.text
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["sigma2"] == 0.1


@pytest.mark.parametrize(
  "key", ["beta", "learning_rate", "sigma2", "free_bits"]
)
def test_non_finite_config_values_are_named(key):
  c = tiny_config()
  c[key] = float("inf")
  with pytest.raises(
    config_lib.ConfigError, match=f"config.{key} must be a finite number"
  ):
    config_lib.validate(c)


def test_a_deleted_metrics_log_is_reported(finished, tmp_path, caplog):
  whole, _ = finished
  workdir = str(tmp_path / "run")
  shutil.copytree(whole, workdir)
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  result = train(tiny_config(num_epochs=6), workdir)
  assert "metrics.jsonl lacks the records of epoch(s) 1-4" in caplog.text
  assert result["timed_epochs"] == 2 and result["epochs"] == 6
  # A damaged line in the middle: skipped, with a warning, no traceback.
  path = os.path.join(workdir, "metrics.jsonl")
  lines = open(path).read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join([lines[0], "{not json", lines[1]]) + "\n")
  assert [r["epoch"] for r in logs.read_records(path)] == [5, 6]
  assert "line 2 is not a JSON record; skipped" in caplog.text


def _tiny_sweep(num_epochs):
  c = sweep_configs.get_config("digits")
  c.base.update(
    dict(
      hidden_sizes=(16,),
      latent_dim=2,
      batch_size=300,
      num_epochs=num_epochs,
      checkpoint_every=1,
      nll_samples=8,
      nll_chunk_size=8,
      progress_bar=False,
    )
  )
  c.axes = ml_collections.ConfigDict(dict(beta=(0.5, 2.0)))
  return c


def test_a_finished_sweep_resumed_with_more_epochs_trains_on(tmp_path):
  workdir = str(tmp_path / "resumed")
  short = [r.to_dict() for r in sweep.run(_tiny_sweep(2), workdir)]
  assert [r["epochs"] for r in short] == [2, 2]
  longer = [r.to_dict() for r in sweep.run(_tiny_sweep(3), workdir)]
  straight = [
    r.to_dict() for r in sweep.run(_tiny_sweep(3), str(tmp_path / "straight"))
  ]
  for a, b in zip(longer, straight):
    _same(a, b)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["base"]["num_epochs"] == 3
  with pytest.raises(config_lib.ConfigError, match="has trained 3 epochs"):
    sweep.run(_tiny_sweep(2), workdir)


# --------------------------------------------------------------------------
# Processes: two at once, Ctrl-C, and every mistake as one line.


def _cli(script, *args, cwd=ROOT, wait=True):
  cmd = [
    sys.executable,
    os.path.join(ROOT, "experiments", script),
    "--compilation_cache=",
    *args,
  ]
  if not wait:
    return subprocess.Popen(
      cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
  return subprocess.run(
    cmd, cwd=cwd, capture_output=True, text=True, timeout=300
  )


def _wait_for(path, proc, seconds=240):
  deadline = time.time() + seconds
  while not os.path.exists(path) and proc.poll() is None:
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


RUN = (
  "--config.source=digits",
  "--config.hidden_sizes=(32,)",
  "--config.latent_dim=2",
  "--config.batch_size=100",
  "--config.nll_samples=16",
  "--config.checkpoint_every=1",
)


def test_two_runs_in_one_workdir_one_is_refused_the_other_completes(tmp_path):
  workdir = tmp_path / "run"
  first = _cli(
    "train.py",
    *RUN,
    "--config.num_epochs=60",
    f"--workdir={workdir}",
    wait=False,
  )
  try:
    _wait_for(workdir / "checkpoints" / "1", first)
    t0 = time.time()
    second = _cli(
      "train.py", *RUN, "--config.num_epochs=60", f"--workdir={workdir}"
    )
    assert time.time() - t0 < 60  # at once: no training
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(
      f"error: --workdir: {workdir} is in use by process {first.pid} on "
    )
    _, err = first.communicate(timeout=300)
  finally:
    first.kill()
  assert first.returncode == 0, err[-2000:]
  records = logs.read_records(str(workdir / "metrics.jsonl"))
  assert [r["epoch"] for r in records] == list(range(1, 61))
  assert (workdir / "summary.json").exists()


def test_ctrl_c_says_how_to_resume(tmp_path):
  workdir = tmp_path / "run"
  proc = _cli(
    "train.py",
    *RUN,
    "--config.num_epochs=3000",  # never ends before the SIGINT
    f"--workdir={workdir}",
    wait=False,
  )
  try:
    _wait_for(workdir / "checkpoints" / "1", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130
  assert "Traceback" not in err
  assert (
    err.strip().splitlines()[-1].endswith("run the same command to resume.")
  )


@pytest.mark.parametrize(
  "script,args,message",
  [
    (
      "train.py",
      ["--config.betta=2"],
      r'unknown config key .betta. Did you mean "beta"',
    ),
    ("train.py", ["--config.beta=abc"], "could not convert string to float"),
    ("train.py", ["--config=/no/such/config.py"], "/no/such/config.py"),
    (
      "train.py",
      ["--config.hidden_sizes=(400,)", "--config.hidden_sizes=(200,)"],
      "--config.hidden_sizes is given 2 times",
    ),
    ("train.py", ["--config.beta=inf"], "config.beta must be a finite"),
    ("train.py", ["--workdir=FILE"], "is a file, not a directory"),
    ("train.py", ["--workdir=FILE/run"], "a part of its path is a file"),
    ("train.py", ["surplus"], "unexpected arguments: surplus"),
    (
      "sweep.py",
      ["--config.axes.beta=(1.0, inf)"],
      r"config.axes.beta: .* is not a value of beta",
    ),
    (
      "sweep.py",
      ['--config.axes.beta=(1, "a")'],
      r"config.axes.beta: 'a' is not a value of beta",
    ),
    (
      "sweep.py",
      ["--config.axes.beta=(0.5,)", "--config.axes.beta=(2.0,)"],
      "--config.axes.beta is given 2 times",
    ),
    ("sweep.py", ["--config.axes.bta=(1.0,)"], "unknown config key .bta."),
  ],
)
def test_every_mistake_is_one_line(tmp_path, script, args, message):
  a_file = tmp_path / "a-file"
  a_file.write_text("not a directory")
  args = [a.replace("FILE", str(a_file)) for a in args]
  if not any(a.startswith("--workdir") for a in args):
    args.append(f"--workdir={tmp_path / 'run'}")
  # From another directory: the default configs are found beside the code.
  result = _cli(script, *args, cwd=tmp_path)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith("error: ")
  assert __import__("re").search(message, lines[0]), lines[0]
