r"""Speed at Burda et al. (2016)'s sizes: vae_jax, bare JAX and PyTorch at batch 20.

Run from the repository root (PyTorch from requirements-torch.txt)::

  python -m benchmarks.burda_speed             # 5 rounds
  python -m benchmarks.burda_speed --rounds 1 --examples 2000  # a smoke run

It rewrites ``benchmarks/BURDA_SPEED.md`` with the machine, library versions,
date and this command, keeps the raw figures in ``benchmarks/burda_speed.json``
and rewrites ``benchmarks/RESULTS.md``, whose batch-20 section is this
run's throughput and targets (:func:`section`). Two rows of ``experiments/configs/burda2016.py``,
vae1 (ELBO, k = 1) and iwae5 (IWAE, k = 5), each trained by:

1. vae_jax, the epoch its engine runs for a single run
   (``benchmarks/jax_burda.py``);
2. a bare JAX ``lax.scan`` epoch of the same model and loss
   (``benchmarks/bare_burda.py``), the floor;
3. PyTorch eager, eager with fused Adam, and ``torch.compile``
   (``benchmarks/torch_burda.py``).

An epoch is the first ``--examples`` images of full MNIST's training set (a
prefix, to keep it short), the same images for all. The protocol is
``benchmarks/compare.py``'s: each measurement a fresh subprocess, the
contenders taking turns (A B C A B C ...), throughput the median examples/s
of the epochs after the first two, then the median (min-max) over rounds;
ratios are ratios of medians (min-max of the per-round ratios).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile

from benchmarks import compare

OUT = os.path.join(compare.ROOT, "benchmarks", "BURDA_SPEED.md")
RESULTS_JSON = os.path.join(compare.ROOT, "benchmarks", "burda_speed.json")
ROWS = ("vae1", "iwae5")
TORCH_FORMS = ("eager", "fused", "compile")
# The paper's schedule: 3,280 epochs of 59,600 images.
FULL_EPOCHS, FULL_EXAMPLES = 3280, 59_600
# Targets of issue 20 (vae_jax over the other).
TARGETS = dict(vs_bare=0.9, vs_best_torch=1.5)
NAMES = {
  "jax": "vae_jax, the engine's epoch (jax_burda.py)",
  "bare": "bare JAX lax.scan epoch (bare_burda.py)",
  "torch:eager": "PyTorch eager, Adam",
  "torch:fused": "PyTorch eager, fused Adam",
  "torch:compile": "PyTorch, torch.compile",
}


def _command(contender, row, args, images, torch_python) -> list[str]:
  from experiments.configs import burda2016

  objective, samples = burda2016.ROWS[row]
  common = [f"--epochs={args.epochs}"]
  loss = [f"--objective={objective}", f"--samples={samples}"]
  if contender == "jax":
    module, python = "jax_burda", sys.executable
    common += [f"--row={row}", f"--examples={args.examples}"]
  elif contender == "bare":
    module, python = "bare_burda", sys.executable
    common += loss + [f"--examples={args.examples}"]
  else:
    module, python = "torch_burda", torch_python
    common += loss + [f"--form={contender.split(':')[1]}", f"--data={images}"]
  return [python, "-m", f"benchmarks.{module}", *common]


def _write_images(path: str, examples: int) -> None:
  """The first ``examples`` training images of full MNIST, ``[N, 784]``
  uint8: what vae_jax's config (``train_examples``) trains on."""
  import numpy as np
  from vae_jax.train import data

  train = data.load("mnist", "dynamic").train[:examples]
  np.save(path, train.reshape(len(train), -1))


def run_all(args) -> dict:
  torch_python = args.torch_python
  if not compare._has_torch(torch_python):
    compare._log(f"no torch in {torch_python}: PyTorch rows left out")
    torch_python = None
  contenders = ["jax", "bare"]
  if torch_python:
    contenders += [f"torch:{f}" for f in args.torch_forms]
  results = dict(
    date=datetime.date.today().isoformat(),
    command=" ".join(["python -m benchmarks.burda_speed"] + sys.argv[1:]),
    machine=compare._machine(),
    versions=compare._versions(torch_python),
    rounds=args.rounds,
    examples=args.examples,
    epochs=args.epochs,
    torch_python=torch_python,
    torch_wanted=args.torch_python,
    throughput={row: {c: [] for c in contenders} for row in ROWS},
    load_average=dict(start=os.getloadavg()),
  )
  with tempfile.TemporaryDirectory(prefix="burda_speed_") as tmp:
    images = os.path.join(tmp, "train.npy")
    _write_images(images, args.examples)
    for r in range(args.rounds):
      for row in ROWS:
        for c in contenders:
          command = _command(c, row, args, images, torch_python)
          events, _, _ = compare._run_json_lines(command)
          runs = results["throughput"][row][c]
          runs.append(compare._throughput(events))
          compare._log(f"round {r + 1} {row}: {c} {runs[-1]:,.0f} examples/s")
  results["load_average"]["end"] = os.getloadavg()
  return results


# ----------------------------------------------------------------------------
# BURDA_SPEED.md


def _minutes(examples_per_second: float) -> float:
  return FULL_EPOCHS * FULL_EXAMPLES / examples_per_second / 60


def _best_torch(runs: dict) -> str | None:
  forms = [c for c in runs if c.startswith("torch")]
  return max(forms, key=lambda c: statistics.median(runs[c]), default=None)


_HEADER = [
  "| | vae1 (ELBO, k = 1) | iwae5 (IWAE, k = 5) |",
  "|---|---:|---:|",
]


def _throughput_table(tp: dict) -> list[str]:
  """Each contender's examples/s and vae_jax's ratios, a Markdown table."""
  lines = list(_HEADER)
  for c in tp[ROWS[0]]:
    cells = " | ".join(compare._fmt(compare._summary(tp[r][c])) for r in ROWS)
    lines.append(f"| {NAMES[c]} | {cells} |")
  ratios = {r: compare._ratio(tp[r]["jax"], tp[r]["bare"]) for r in ROWS}
  lines.append(
    "| vae_jax / bare JAX | "
    + " | ".join(compare._fmt_ratio(ratios[r]) for r in ROWS)
    + " |"
  )
  best = {r: _best_torch(tp[r]) for r in ROWS}
  if best[ROWS[0]]:
    cells = [
      compare._fmt_ratio(compare._ratio(tp[r]["jax"], tp[r][best[r]]))
      + f" ({best[r]})"
      for r in ROWS
    ]
    lines.append(f"| vae_jax / the best PyTorch form | {' | '.join(cells)} |")
  return lines


def section(results: dict) -> list[str]:
  """RESULTS.md's batch-20 section: this run's throughput and targets."""
  tp = results["throughput"]
  best = {r: _best_torch(tp[r]) for r in ROWS}
  return [
    "## Batch 20: Burda et al. (2016)'s model (issue 20)",
    "",
    f"From `{results['command']}` ({results['date']}, "
    f"{results['rounds']} round(s), the same machine class as above; "
    "the job, the full schedule's minutes and the load average in "
    "`benchmarks/BURDA_SPEED.md`). Examples/s of epochs 3+, median (min-max) "
    "over rounds.",
    "",
    *_throughput_table(tp),
    "",
    *_targets(tp, best),
    "",
  ]


def render(results: dict) -> str:
  m, v, tp = results["machine"], results["versions"], results["throughput"]
  n, epochs = results["examples"], results["epochs"]
  contenders = list(tp[ROWS[0]])
  lines = [
    "# Speed at Burda et al. (2016)'s sizes: vae_jax, bare JAX and PyTorch",
    "",
    f"Regenerate with `{results['command']}` from the repository root (this "
    f"file is rewritten). Measured {results['date']}.",
    "",
    f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['memory_gib']} GiB, "
    f"GPU: {m['gpu']}; JAX backend {m['platform']} ({m['jax_devices']} "
    "device(s)). Versions: "
    + ", ".join(f"{k} {val}" for k, val in v.items())
    + ".",
    "",
    "Load average (1, 5, 15 min) at the start "
    + ", ".join(f"{a:.2f}" for a in results["load_average"]["start"])
    + ", at the end "
    + ", ".join(f"{a:.2f}" for a in results["load_average"]["end"])
    + f" on {m['cpu_count']} cores: other busy processes slow every "
    "contender, PyTorch's spin-waiting threads most (`torch_vae.py`).",
    "",
    "The job: `experiments/configs/burda2016.py`'s model (784-200-200-50, "
    "tanh, Bernoulli decoder, sigma = exp(linear)), batch 20, dynamic "
    "binarization drawn per batch, vae1 (the ELBO, k = 1) and iwae5 (the "
    "IWAE bound, k = 5 samples per example). vae_jax trains with its "
    "`burda2016_adam` and the `burda` schedule, the others with Adam (b1 "
    "0.99, b2 0.999, eps 1e-4) at 1e-3. An epoch here is the first "
    f"{n:,} images of full MNIST's training set ({n // 20} steps), the same"
    f" images for all; {epochs} epochs per process, throughput the median "
    "of epochs 3+ (the first two are warm-up). Every measurement is a fresh "
    "process; contenders take turns (A B C A B C ...) in each of "
    f"{results['rounds']} round(s). Figures: median (min-max) over rounds; "
    "ratios: ratio of medians (min-max of per-round ratios).",
    "",
  ]
  if results["torch_python"] is None:
    lines += [
      f"PyTorch: not measured, no torch in `{results['torch_wanted']}` "
      "(`pip install -r requirements-torch.txt`, or `--torch_python`).",
      "",
    ]
  lines += ["## Training throughput (examples/s, epochs 3+)", ""]
  lines += _throughput_table(tp)
  best = {r: _best_torch(tp[r]) for r in ROWS}
  lines += [
    "",
    f"## The full schedule: {FULL_EPOCHS:,} epochs of {FULL_EXAMPLES:,} "
    "images, minutes on this machine",
    "",
    *_HEADER,
  ]
  for c in contenders:
    cells = []
    for r in ROWS:
      s = compare._summary(tp[r][c])
      cells.append(
        f"{_minutes(s['median']):,.0f} "
        f"({_minutes(s['max']):,.0f}-{_minutes(s['min']):,.0f})"
      )
    lines.append(f"| {NAMES[c]} | {' | '.join(cells)} |")
  lines += [
    "",
    f"From the throughput above: training only (no evaluations), at the "
    f"prefix's speed per step ({FULL_EXAMPLES // 20:,} steps an epoch "
    "spread each epoch's fixed cost thinner, so these lean long).",
    "",
  ]
  return "\n".join(lines + _targets(tp, best)) + "\n"


def _targets(tp: dict, best: dict) -> list[str]:
  rows = []
  for r in ROWS:
    ratio = compare._ratio(tp[r]["jax"], tp[r]["bare"])
    wanted = TARGETS["vs_bare"]
    rows.append(
      f"| {r}: vae_jax vs the bare JAX epoch | {compare._fmt_ratio(ratio)} "
      f"| >= {wanted:.2f}x | {'met' if ratio['ratio'] >= wanted else 'NOT met'} |"
    )
  for r in ROWS:
    wanted = TARGETS["vs_best_torch"]
    if best[r] is None:
      rows.append(
        f"| {r}: vae_jax vs the best PyTorch form | not measured "
        f"| >= {wanted:.2f}x | |"
      )
      continue
    ratio = compare._ratio(tp[r]["jax"], tp[r][best[r]])
    rows.append(
      f"| {r}: vae_jax vs the best PyTorch form ({best[r]}) | "
      f"{compare._fmt_ratio(ratio)} | >= {wanted:.2f}x | "
      f"{'met' if ratio['ratio'] >= wanted else 'NOT met'} |"
    )
  return [
    "## Targets (issue 20)",
    "",
    "| target | measured | wanted | |",
    "|---|---:|---:|---|",
    *rows,
  ]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument(
    "--examples",
    type=int,
    default=6000,
    help="an epoch: the first N images of full MNIST's training set",
  )
  parser.add_argument(
    "--epochs",
    type=int,
    default=5,
    help="epochs per process; the first two are warm-up",
  )
  parser.add_argument(
    "--torch_forms",
    nargs="+",
    choices=TORCH_FORMS,
    default=list(TORCH_FORMS),
  )
  parser.add_argument(
    "--torch_python",
    default=sys.executable,
    help="a Python with torch==2.13.0 (CPU build)",
  )
  args = parser.parse_args(argv)
  if args.epochs <= compare.WARM_UP_EPOCHS:
    parser.error(f"--epochs must exceed the {compare.WARM_UP_EPOCHS} warm-up")
  results = run_all(args)
  compare._write(RESULTS_JSON, json.dumps(results, indent=1))
  compare._write(OUT, render(results))
  compare._log(f"wrote {OUT}")
  compare.main(["--render_only"])  # RESULTS.md, with the section above


if __name__ == "__main__":
  main()
