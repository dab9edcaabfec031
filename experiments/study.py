"""The reconstruction-term study: ``python -m experiments.study``.

  python -m experiments.study                     # writes docs/study.md
  python -m experiments.study --config=experiments/configs/study.py:long \\
      --workdir=runs/study-long --report=runs/study-long/study.md

Trains the default model with each decoder of ``vae_jax.sweep.study.ARMS``
over three seeds (one for the discretized logistics: ``seeds_by_arm``; one
compiled program per decoder), evaluates them and
writes the report (--report; its figure goes to figures/ beside it). Re-running
the command resumes: finished decoders are read back, not trained again.
"""

import os
import shlex
import sys
import time

if __package__ in (
  None,
  "",
):  # run by path: python path/to/experiments/study.py
  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )

from absl import app
from absl import flags

from experiments import cli
from vae_jax.sweep import study
from vae_jax.sweep import study_report
from vae_jax.train import results

_CONFIG, _WORKDIR, _CACHE = cli.define_common(
  "study.py", "Study", "runs/study", "Where each decoder's sweep goes."
)
_REPORT = flags.DEFINE_string(
  "report", "docs/study.md", "The report to write (markdown)."
)


def main(argv):
  config = cli.start(argv, _CONFIG, _CACHE)
  start = time.time()

  def work():
    by_arm = study.run(config, _WORKDIR.value)
    decoded = {
      name: study.decoded(config, name, _WORKDIR.value) for name in config.arms
    }
    return by_arm, decoded

  by_arm, decoded = cli.guarded(work, _WORKDIR.value)
  cells = study.cells(config, by_arm, decoded)
  command = "python -m experiments.study " + " ".join(
    shlex.quote(a) for a in sys.argv[1:]
  )
  study_report.write(
    _REPORT.value,
    config,
    cells,
    command=command.strip(),
    seconds=time.time() - start,
    provenance=results.provenance(),
  )
  print(
    f"\nWrote {os.path.abspath(_REPORT.value)}; runs in "
    f"{os.path.abspath(_WORKDIR.value)}.\n"
  )
  print(study_report.headline(cells))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
