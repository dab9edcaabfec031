r"""Wall time of a sweep as one program against its members one after another.

Run from the repository root::

  python -m benchmarks.sweep [--config.base.num_epochs=30 ...]

takes a sweep config (default ``experiments/configs/sweep.py``: 12 Gaussian
VAEs, 4 beta x 3 sigma^2, on mnist5k) and times, in this one process, with
the persistent compilation cache off:

- the sweep: ``vae_jax.sweep.run`` (one program per group, every
  member trained at once, then evaluated at once, then tables and figures);
- the same members one after another: ``vae_jax.train.train_and_evaluate``
  on each member's training config (what a user without sweeps runs; each
  compiles its own program, as separate processes would, but pays no process
  start-up, which favours this side by ~7 s a member).

Both write to temporary folders and do the same work per member (same epochs,
same evaluation). The two are run in the order sweep, sequential, sweep, and
the sweep's figure is the better of its two runs. Results go to
benchmarks/SWEEP.md (overwritten) with the machine, versions, date and the
command.
"""

import datetime
import os
import platform
import sys
import tempfile
import time

from absl import app
from absl import logging
import flax
import jax
import jaxlib
from ml_collections import config_flags
import optax

from experiments import cli
from vae_jax import sweep
from vae_jax.train import experiment
from vae_jax.train import results

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  cli.config_path("sweep.py"),
  "Sweep config (a .py file).",
  lock_config=True,
)
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SWEEP.md")


def _time_sweep(config) -> tuple[float, list[dict]]:
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    rows = [r.to_dict() for r in sweep.run(config, workdir)]
    return time.perf_counter() - t0, rows


def _time_sequential(config) -> tuple[float, list[dict]]:
  summaries = []
  t0 = time.perf_counter()
  for member in sweep.members(config):
    with tempfile.TemporaryDirectory() as workdir:
      result = experiment.train_and_evaluate(member.config, workdir)
      summaries.append(result.to_dict())
  return time.perf_counter() - t0, summaries


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  config.base.progress_bar = False
  members = sweep.members(config)
  first, rows = _time_sweep(config)
  seq_seconds, summaries = _time_sequential(config)
  second, _ = _time_sweep(config)
  sweep_seconds = min(first, second)
  sweep_train = sum({r["group"]: r["train_seconds"] for r in rows}.values())
  sweep_eval = sum({r["group"]: r["eval_seconds"] for r in rows}.values())
  seq_train = sum(s["train_seconds"] for s in summaries)
  seq_eval = sum(s["eval_seconds"] for s in summaries)
  worst = max(
    abs(r["test_elbo"] - s["test_elbo"]) / abs(s["test_elbo"])
    for r, s in zip(rows, summaries)
    if r["test_elbo"] is not None
  )
  base = config.base
  m = results.provenance()
  command = "python -m benchmarks.sweep " + " ".join(sys.argv[1:])
  lines = [
    "# Sweep as one program vs the same members one after another",
    "",
    f"Regenerate: `{command.strip()}` (from the repository root; "
    f"{datetime.date.today().isoformat()}).",
    "",
    f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['platform']} "
    f"({m['device']}), {jax.device_count()} JAX device(s); Python "
    f"{platform.python_version()}, jax {jax.__version__}, jaxlib "
    f"{jaxlib.__version__}, flax {flax.__version__}, optax "
    f"{optax.__version__}. Persistent compilation cache off; one process.",
    "",
    f"Members: {len(members)} ({', '.join(config.axes.keys())} over "
    + "; ".join(f"{k} {tuple(v)}" for k, v in config.axes.items())
    + f"), {base.source}, {base.likelihood} decoder, MLP "
    f"{base.hidden_sizes}-{base.latent_dim}, batch {base.batch_size}, "
    f"{base.num_epochs} epochs, NLL with {base.nll_samples} samples.",
    "",
    "| | whole (s) | training (s) | evaluation (s) |",
    "|---|---:|---:|---:|",
    f"| sweep, one program (best of 2) | {sweep_seconds:.1f} | "
    f"{sweep_train:.1f} | {sweep_eval:.1f} |",
    f"| members one after another | {seq_seconds:.1f} | {seq_train:.1f} | "
    f"{seq_eval:.1f} |",
    f"| ratio (one after another / sweep) | "
    f"{seq_seconds / sweep_seconds:.2f} | {seq_train / sweep_train:.2f} | "
    f"{seq_eval / sweep_eval:.2f} |",
    "",
    f"Sweep runs: {first:.1f} s and {second:.1f} s. Training times include "
    "compilation (each sequential member compiles its own program); "
    "'whole' adds data loading, evaluation, checkpoints and figures (the "
    "sequential runs draw per-member figures). The sweep's members agree "
    f"with the single runs: worst relative test-ELBO difference {worst:.1e}.",
    "",
  ]
  with open(OUTPUT, "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
