"""Train a sweep of VAEs as one program per group: ``python -m experiments.sweep``.

  python -m experiments.sweep --workdir=runs/sweep
  python -m experiments.sweep --config=experiments/configs/sweep.py:digits \\
      --config.axes.beta='(0.5, 1.0, 2.0)' --workdir=runs/sweep-digits

Members are sharded over every device JAX sees (for N CPU devices:
XLA_FLAGS=--xla_force_host_platform_device_count=N). On several hosts, start
the same command on each with --coordinator_address=HOST:PORT,
--num_processes and --process_id, or --distributed alone where JAX detects the
cluster (Cloud TPU, SLURM, Open MPI, Kubernetes JobSets); see the README.
Re-running the command resumes.
"""

import os
import sys

if __package__ in (
  None,
  "",
):  # run by path: python path/to/experiments/sweep.py
  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )

from absl import app
from absl import flags
import jax

from experiments import cli
from vae_jax import sweep
from vae_jax.train import results

_CONFIG, _WORKDIR, _CACHE = cli.define_common(
  "sweep.py", "Sweep", "runs/sweep", "Where outputs and checkpoints go."
)
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Call jax.distributed.initialize() and let JAX detect the cluster.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  "",
  "HOST:PORT of process 0; with --num_processes and --process_id starts "
  "JAX's multi-process runtime.",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "Processes in the job."
)
_PROCESS_ID = flags.DEFINE_integer(
  "process_id", None, "This process's index, 0..num_processes-1."
)


def initialize_distributed() -> None:
  """Starts jax.distributed from the flags (before any other JAX call)."""
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise app.UsageError(
        "--coordinator_address needs --num_processes and --process_id"
      )
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def main(argv):
  config = cli.start(argv, _CONFIG, _CACHE)
  initialize_distributed()
  rows = cli.guarded(lambda: sweep.run(config, _WORKDIR.value), _WORKDIR.value)
  if jax.process_index() != 0:
    return
  workdir = os.path.abspath(_WORKDIR.value)
  print(
    f"\n{len(rows)} members on {jax.device_count()} device(s) in "
    f"{jax.process_count()} process(es). Outputs in {workdir}:"
  )
  for name in ("results.csv", "results.json", "figures/", "groups/"):
    print(f"  {os.path.join(workdir, name)}")
  print(results.format_table(rows))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
