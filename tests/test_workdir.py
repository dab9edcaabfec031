"""The workdir contract: never lose a run, never misreport one, and every
user mistake at either command is one line.

Processes that are killed or run twice are subprocesses with timeouts.
"""

import json
import os
import re
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
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

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


def test_a_failed_start_does_not_lock_its_workdir(finished, tmp_path, caplog):
  # beta = 3e38 (finite, even in float32): the first loss is infinite, the
  # run stops in epoch 1, before any checkpoint. The corrected config may
  # then start there. (Both are the finished run's config but for beta, an
  # argument of its compiled programs: only the guarded epoch that names the
  # failing step is compiled here.)
  workdir = str(tmp_path / "run")
  with pytest.raises(engine.NonFiniteLossError, match="epoch 1, step 1;"):
    train(tiny_config(beta=3e38), workdir)
  caplog.clear()
  assert np.isfinite(train(tiny_config(), workdir)["test_nll"])
  assert "holds a config but no checkpoint" in caplog.text
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["beta"] == 1.0


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
  short = [r.to_dict() for r in sweep.run(_tiny_sweep(1), workdir)]
  assert [r["epochs"] for r in short] == [1, 1]
  longer = [r.to_dict() for r in sweep.run(_tiny_sweep(2), workdir)]
  assert [r["epochs"] for r in longer] == [2, 2]
  straight = [
    r.to_dict() for r in sweep.run(_tiny_sweep(2), str(tmp_path / "straight"))
  ]
  for a, b in zip(longer, straight):
    _same(a, b)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["base"]["num_epochs"] == 2
  with pytest.raises(config_lib.ConfigError, match="has trained 2 epochs"):
    sweep.run(_tiny_sweep(1), workdir)


# --------------------------------------------------------------------------
# Processes: two at once, Ctrl-C, and every mistake as one line.


_SIGINT_DEFAULT = (
  "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
  "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def _cli(script, *args, cwd=ROOT, cache="", wait=True):
  cmd = [
    sys.executable,
    os.path.join(ROOT, "experiments", script),
    f"--compilation_cache={cache}",
    *args,
  ]
  if not wait:
    # SIGINT as a terminal delivers it, however pytest was started: a shell
    # without job control starts background jobs with SIGINT ignored, which
    # their children inherit (and Python then installs no handler). The
    # child resets it and execs the script (no preexec_fn: forking a
    # multithreaded JAX process to run Python in the child can deadlock).
    return subprocess.Popen(
      [sys.executable, "-c", _SIGINT_DEFAULT, *cmd[1:]],
      cwd=cwd,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
  return subprocess.run(
    cmd, cwd=cwd, capture_output=True, text=True, timeout=300
  )


def _wait_for(path, proc, seconds=240):
  deadline = time.time() + seconds
  while not os.path.exists(path) and proc.poll() is None:
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.02)


# The model, data and evaluation of test_experiment.py's CLI_RUN (the keys
# that shape the compiled programs), so that the training processes of both
# modules share one compilation cache (cli_cache).
RUN = (
  "--config.source=digits",
  "--config.hidden_sizes=(64,)",
  "--config.latent_dim=2",
  "--config.batch_size=100",
  "--config.nll_samples=16",
  "--config.checkpoint_every=1",
)


@pytest.fixture(scope="module")
def cli_cache(shared_dir):
  """The compilation cache of the training processes of this session's CLI
  tests (here and in test_experiment.py): they train one model, so the first
  compiles it and the others read its programs. (An entry read while another
  process writes it is compiled again, with a warning.)"""
  return os.path.join(shared_dir, "cli-jax-cache")


def test_two_runs_in_one_workdir_one_is_refused_the_other_completes(
  tmp_path, cli_cache
):
  workdir = tmp_path / "run"
  command = ("train.py", *RUN, "--config.num_epochs=3", f"--workdir={workdir}")
  first = _cli(*command, cache=cli_cache, wait=False)
  try:
    # config.json is written under the lock: from then on the first holds it.
    _wait_for(workdir / "config.json", first)
    # Stopped, it keeps its lock (and stays alive) however long the second
    # takes to start; SIGCONT and it trains on.
    first.send_signal(signal.SIGSTOP)
    assert first.poll() is None, "the first run ended before the second began"
    t0 = time.time()
    second = _cli(*command, cache=cli_cache)
    first.send_signal(signal.SIGCONT)
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
  assert [r["epoch"] for r in records] == [1, 2, 3]
  assert (workdir / "summary.json").exists()


def test_ctrl_c_says_how_to_resume(tmp_path, cli_cache):
  workdir = tmp_path / "run"
  proc = _cli(
    "train.py",
    *RUN,
    "--config.num_epochs=3000",  # never ends before the SIGINT
    f"--workdir={workdir}",
    cache=cli_cache,
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


MISTAKES = [
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
]
# The one case started as a process of its own (as the two-runs test's second
# train.py is); the others run in children of one process (_FORKED).
ON_ITS_OWN = MISTAKES[-1]


def _mistake_args(args, directory):
  """A case's arguments in ``directory``: FILE is a file there, and the
  workdir, unless given, a folder there."""
  a_file = directory / "a-file"
  a_file.write_text("not a directory")
  args = [a.replace("FILE", str(a_file)) for a in args]
  if not any(a.startswith("--workdir") for a in args):
    args.append(f"--workdir={directory / 'run'}")
  return args


# Each case is the real script run as __main__ (runpy) with its command line,
# in a child forked from one process that has already imported the libraries
# the scripts import: the child's exit status and stderr are the case's. It
# starts as `python path/to/script.py` starts (sys.argv, the working
# directory, sys.path[0] the script's folder); what the imports print would
# be printed once, by the parent, whose stderr must be empty. No JAX backend
# exists before the forks: these mistakes are refused before any JAX work.
_FORKED = r"""
import json, os, runpy, sys, traceback

root = sys.argv[1]
sys.path.insert(0, root)
import absl.app, absl.flags, absl.logging, jax, ml_collections.config_flags
import vae_jax.sweep, vae_jax.train, vae_jax.train.results
path = [p for p in sys.path if p not in ("", root)]


def child(script, args, cwd):
  code = 1
  try:
    os.chdir(cwd)
    sys.argv = [script, *args]
    sys.path[:] = [os.path.dirname(script), *path]
    runpy.run_path(script, run_name="__main__")
    code = 0
  except SystemExit as e:  # as the interpreter ends on one
    if e.code is None or isinstance(e.code, int):
      code = e.code or 0
    else:
      print(e.code, file=sys.stderr)
  except BaseException:
    traceback.print_exc()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


out = []
for script, args, cwd in json.load(sys.stdin):
  sys.stdout.flush()
  sys.stderr.flush()
  r, w = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(r)
    os.dup2(w, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    child(script, args, cwd)
  os.close(w)
  err = b""
  while chunk := os.read(r, 65536):
    err += chunk
  os.close(r)
  _, status = os.waitpid(pid, 0)
  out.append([os.waitstatus_to_exitcode(status), err.decode()])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def forked_mistakes(tmp_path_factory):
  """(script, args) -> (exit status, stderr) of each case but ON_ITS_OWN."""
  base = tmp_path_factory.mktemp("mistakes")
  cases, keys = [], []
  for i, (script, args, _) in enumerate(MISTAKES):
    if (script, args) == ON_ITS_OWN[:2]:
      continue
    directory = base / str(i)
    directory.mkdir()
    script_path = os.path.join(ROOT, "experiments", script)
    keys.append((script, tuple(args)))
    args = ["--compilation_cache=", *_mistake_args(args, directory)]
    cases.append([script_path, args, str(directory)])
  runner = subprocess.run(
    [sys.executable, "-c", _FORKED, ROOT],
    input=json.dumps(cases),
    cwd=base,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert runner.returncode == 0 and not runner.stderr, runner.stderr[-3000:]
  return dict(zip(keys, json.loads(runner.stdout)))


@pytest.mark.parametrize("script,args,message", MISTAKES)
def test_every_mistake_is_one_line(
  forked_mistakes, tmp_path, script, args, message
):
  if (script, args) == ON_ITS_OWN[:2]:
    # From another directory: the default configs are found beside the code.
    result = _cli(script, *_mistake_args(args, tmp_path), cwd=tmp_path)
    returncode, stderr = result.returncode, result.stderr
  else:
    returncode, stderr = forked_mistakes[(script, tuple(args))]
  assert returncode != 0
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr[-3000:]
  assert lines[0].startswith("error: ")
  assert re.search(message, lines[0]), lines[0]
