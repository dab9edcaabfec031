"""Burda et al. (2016), Table 1's one-stochastic-layer rows: ``python -m experiments.burda``.

  python -m experiments.burda                            # five rows, 3,280 epochs each
  python -m experiments.burda --rows=vae1,iwae5 --stages=5   # 121 epochs each

Trains each row of experiments/configs/burda2016.py (``--rows``; the
``--config`` overrides apply to every row, the row then sets its objective
and k) for the first ``--stages`` stages of the 3^i-epoch schedule, each in
its own workdir ``<--workdir>/<row>``, evaluates the k = 5,000 NLL and the
active units on the test images and writes the report (--report): the
paper's five rows, each with this run's figures where it has them. Rows not
named in ``--rows`` that an earlier invocation finished in the same workdir
(their ``summary.json``) are read back into the report, so rows can be
trained at different budgets. Re-running the command resumes every named row
from its newest checkpoint; more stages train on.
"""

import os
import shlex
import sys

if __package__ in (
  None,
  "",
):  # run by path: python path/to/experiments/burda.py
  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )

from absl import app
from absl import flags

from experiments import cli
from experiments.configs import burda2016
import vae_jax.train
from vae_jax.sweep import burda_report
from vae_jax.train import results
from vae_jax.train import training

_CONFIG, _WORKDIR, _CACHE = cli.define_common(
  "burda2016.py",
  "The rows' shared",
  "runs/burda2016",
  "Each row trains in <workdir>/<row>.",
)
_ROWS = flags.DEFINE_list(
  "rows", list(burda2016.ROWS), f"Rows to train, of {list(burda2016.ROWS)}."
)
_STAGES = flags.DEFINE_integer(
  "stages",
  training.BURDA_STAGES,
  "Train the first N stages of the schedule (3^i epochs for i < N).",
  lower_bound=1,
  upper_bound=training.BURDA_STAGES,
)
_REPORT = flags.DEFINE_string(
  "report", "docs/burda2016.md", "The report to write (markdown)."
)


def row_config(base, row: str, stages: int):
  """``base`` with the row's objective and k, trained for ``stages`` stages."""
  config = base.copy_and_resolve_references()
  config.objective, config.train_samples = burda2016.ROWS[row]
  config.num_epochs = sum(training.burda_stage_epochs(stages))
  return config


def main(argv):
  base = cli.start(argv, _CONFIG, _CACHE)
  if unknown := [r for r in _ROWS.value if r not in burda2016.ROWS]:
    cli.fail(f"--rows: unknown {unknown}; rows are {list(burda2016.ROWS)}")
  out = []
  for row in _ROWS.value:
    config = row_config(base, row, _STAGES.value)
    workdir = os.path.join(_WORKDIR.value, row)
    print(f"{row}: {config.num_epochs} epochs in {workdir}", flush=True)
    out.append(
      cli.guarded(
        lambda: vae_jax.train.train_and_evaluate(config, workdir), workdir
      )
    )
  # Rows trained by an earlier invocation into this workdir, read back.
  for row in burda2016.ROWS:
    if row not in _ROWS.value and (
      earlier := burda_report.read_back(_WORKDIR.value, row)
    ):
      print(f"{row}: read back from {os.path.join(_WORKDIR.value, row)}")
      out.append(earlier)
  command = "python -m experiments.burda " + " ".join(
    shlex.quote(a) for a in sys.argv[1:]
  )
  burda_report.write(
    _REPORT.value,
    out,
    command=command.strip(),
    provenance=results.provenance(),
  )
  print(f"\nWrote {os.path.abspath(_REPORT.value)}.\n")
  print("\n".join(burda_report.table(out)))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
