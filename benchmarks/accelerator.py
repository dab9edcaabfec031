"""The accelerator benchmark: one command, a few minutes on one GPU or TPU.

  python -m benchmarks.accelerator                  # writes benchmarks/ACCELERATOR.md
  python -m benchmarks.accelerator --tiny --out=/tmp/ACCELERATOR.md   # seconds, any CPU

Measures, on whatever device JAX picks, through the code a run and a sweep
use (``vae_jax.train.group.Group.build``, then
``vae_jax.train.program.make_epoch`` and ``make_evaluator``):

1. training throughput of the default model (MLP 784-400-20, Bernoulli,
   Adam 1e-3, mnist5k, dynamic binarization) at batch 128 and 1024, in
   examples per second after a compiled warm-up epoch;
2. a 64-member beta x sigma^2 sweep (Gaussian decoder, dequantized mnist5k)
   trained as one program against one member alone: wall time per epoch of
   each, and their ratio (target: the sweep within 2x of one member);
3. the k = 5000 importance-weighted NLL of 10,000 images (mnist5k's 5,000
   digits, twice) with the default chunks: seconds in all (target: <= 60 s),
   after a compiled warm-up batch;
4. the seconds per epoch of each row of Burda et al. (2016)'s Table 1
   (experiments/configs/burda2016.py: full MNIST's 59,600 training images,
   batch 20, VAE k = 1, 5, 50 and IWAE k = 5, 50), after a compiled warm-up
   epoch, and what the whole 3,280-epoch schedule of each costs at that
   rate.

Each figure is the median of ``--repeats`` timed repeats. ``--tiny`` shrinks
every size so the whole command runs in seconds on a CPU (what the test
does); its figures mean nothing.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

from experiments.configs import burda2016
from experiments.configs import default
from experiments.configs import sweep as sweep_configs
from vae_jax import sweep
from vae_jax.train import data
from vae_jax.train import evaluation
from vae_jax.train import group as group_lib
from vae_jax.train import member
from vae_jax.train import program
from vae_jax.train import results
from vae_jax.train import training

HERE = os.path.dirname(os.path.abspath(__file__))

FULL = dict(
  batches=(128, 1024),
  epochs=3,
  members=64,
  sweep_epochs=3,
  images=10_000,
  samples=5000,
  repeats=3,
  burda_epochs=1,
  burda_model={},
  burda_rows=tuple(burda2016.ROWS),
)
TINY = dict(
  batches=(16, 32),
  epochs=2,
  members=4,
  sweep_epochs=1,
  images=40,
  samples=8,
  repeats=1,
  burda_epochs=1,
  burda_model=dict(
    source="digits", train_examples=200, hidden_sizes=(16,), latent_dim=2
  ),
  # Each row is a program of its own to compile: two test both objectives
  # and k > 1.
  burda_rows=("vae1", "iwae50"),
)


def _timed(fn, repeats: int) -> float:
  """Median seconds of ``fn()`` (which must block until done)."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _train_seconds(members, mesh, epochs, repeats) -> tuple:
  """Seconds per epoch of a group of ``members`` on ``mesh`` (after a
  compiled warm-up epoch), and its steps per epoch."""
  group = group_lib.Group.build(members, mesh=mesh)
  epoch = program.make_epoch(
    group.parts.graphdef,
    group.parts.optimizer,
    mesh,
    batch_size=group.config.batch_size,
    protocol=group.dataset.protocol,
    levels=group.dataset.levels,
    objective=group.parts.objective,
  )
  raw, hparams = group.raw_train, group.hparams
  holder = [group.state]

  def run():
    for _ in range(epochs):
      holder[0], metrics = epoch(holder[0], raw, hparams)
    jax.block_until_ready(metrics)

  holder[0], metrics = epoch(holder[0], raw, hparams)  # compile, warm up
  jax.block_until_ready(metrics)
  return _timed(run, repeats) / epochs, group.steps


def throughput(sizes) -> list[dict]:
  mesh = program.make_mesh(jax.devices()[:1])
  out = []
  for batch in sizes["batches"]:
    config = default.get_config()
    config.batch_size = batch
    seconds, steps = _train_seconds(
      [member.Member(config)], mesh, sizes["epochs"], sizes["repeats"]
    )
    out.append(
      dict(batch_size=batch, examples_per_second=steps * batch / seconds)
    )
  return out


def sweep_vs_one(sizes) -> dict:
  c = sweep_configs.get_config()
  k = sizes["members"]
  side = int(np.sqrt(k))
  c.axes.beta = tuple(2.0 ** (i - side // 2) for i in range(side))
  c.axes.sigma2 = tuple(0.01 * 2.0**i for i in range(k // side))
  members = sweep.members(c)
  mesh = program.make_mesh()
  epochs, repeats = sizes["sweep_epochs"], sizes["repeats"]
  one, _ = _train_seconds(
    members[:1], program.make_mesh(jax.devices()[:1]), epochs, repeats
  )
  many, _ = _train_seconds(members, mesh, epochs, repeats)
  return dict(
    members=len(members),
    devices=mesh.size,
    one_member_seconds_per_epoch=one,
    sweep_seconds_per_epoch=many,
    ratio=many / one,
  )


def nll(sizes) -> dict:
  config = default.get_config()
  mesh = program.make_mesh(jax.devices()[:1])
  group = group_lib.Group.build([member.Member(config)], mesh=mesh)
  dataset = group.dataset
  pool = np.concatenate(
    [
      data.evaluation_images(dataset),
      np.asarray(dataset.train, np.float32) / 255.0,
    ]
  )
  reps = -(-sizes["images"] // len(pool))
  images = np.concatenate([pool] * reps)[: sizes["images"]]
  params, key_data = group.state.train.params, group.key_data
  batch = min(config.eval_batch_size, len(images))
  samples = sizes["samples"]
  evaluate = program.make_evaluator(
    group.parts.graphdef,
    mesh,
    num_samples=samples,
    chunk_size=min(config.nll_chunk_size, samples),
    batch_size=batch,
  )
  same = program.replicated(mesh)
  padded = program.place(evaluation.padded_rows(images, batch), same)

  def run(stop=None):
    stop = len(images) if stop is None else stop
    out = [
      evaluate(
        params, None, key_data, padded, program.place(np.uint32(s), same)
      )
      for s in range(0, stop, batch)
    ]
    jax.block_until_ready(out)

  run(batch)  # compile, warm up
  seconds = _timed(run, sizes["repeats"])
  return dict(
    images=len(images),
    samples=samples,
    seconds=seconds,
    ms_per_image=1000 * seconds / len(images),
  )


def burda(sizes) -> list[dict]:
  """Seconds per epoch of each Table 1 row, and its full schedule's hours."""
  mesh = program.make_mesh(jax.devices()[:1])
  full = sum(training.burda_stage_epochs())
  out = []
  for row in sizes["burda_rows"]:
    config = burda2016.get_config(row)
    config.update(sizes["burda_model"])
    seconds, steps = _train_seconds(
      [member.Member(config)], mesh, sizes["burda_epochs"], sizes["repeats"]
    )
    out.append(
      dict(
        row=row,
        objective=config.objective,
        train_samples=config.train_samples,
        steps_per_epoch=steps,
        seconds_per_epoch=seconds,
        full_schedule_hours=seconds * full / 3600,
      )
    )
  return out


def render(record: dict) -> str:
  p = record["provenance"]
  lines = [
    "# Accelerator benchmark",
    "",
    f"Regenerate: `{record['command']}` (from the repository root; "
    f"{record['date']}).",
    "",
    f"Machine: {p['device']} ({p['platform']}, {p['device_count']} "
    f"device(s)); host CPU {p['cpu']}, {p['cpu_count']} cores; Python "
    f"{p['python']}, jax {p['jax']}, jaxlib {p['jaxlib']}, flax "
    f"{p['flax']}, optax {p['optax']}; commit {p['git_commit']}.",
    "",
  ]
  if record["tiny"]:
    lines += [
      "**--tiny: sizes shrunk to test the command; the figures "
      "below mean nothing.**",
      "",
    ]
  lines += ["| measurement | value | target |", "|---|---:|---|"]
  for t in record["throughput"]:
    lines.append(
      f"| training, batch {t['batch_size']}, examples/s | "
      f"{t['examples_per_second']:,.0f} | |"
    )
  s = record["sweep"]
  lines += [
    f"| one member, s per epoch | {s['one_member_seconds_per_epoch']:.3f} | |",
    f"| {s['members']}-member sweep on {s['devices']} device(s), s per "
    f"epoch | {s['sweep_seconds_per_epoch']:.3f} | |",
    f"| sweep / one member | {s['ratio']:.2f}x | <= 2x |",
  ]
  n = record["nll"]
  lines += [
    f"| k = {n['samples']} NLL of {n['images']:,} images, s | "
    f"{n['seconds']:.1f} | <= 60 s |",
    f"| ... per image, ms | {n['ms_per_image']:.2f} | |",
  ]
  for b in record["burda"]:
    lines.append(
      f"| Burda {b['row']} ({b['objective']}, k = {b['train_samples']}), "
      f"batch 20, s per epoch ({b['steps_per_epoch']:,} steps) | "
      f"{b['seconds_per_epoch']:.2f} | |"
    )
  hours = sum(b["full_schedule_hours"] for b in record["burda"])
  lines += [
    f"| Burda, the {len(record['burda'])} rows' full schedules (3,280 "
    f"epochs each), hours | {hours:.1f} | |",
    "",
  ]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--tiny",
    action="store_true",
    help="tiny sizes: tests the command in seconds",
  )
  parser.add_argument("--out", default=os.path.join(HERE, "ACCELERATOR.md"))
  args = parser.parse_args(argv)
  sizes = TINY if args.tiny else FULL
  record = dict(
    tiny=args.tiny,
    date=datetime.date.today().isoformat(),
    command="python -m benchmarks.accelerator"
    + (" --tiny" if args.tiny else ""),
    provenance=results.provenance(),
    throughput=throughput(sizes),
    sweep=sweep_vs_one(sizes),
    nll=nll(sizes),
    burda=burda(sizes),
  )
  text = render(record)
  with open(args.out, "w") as f:
    f.write(text)
  with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
    json.dump(record, f, indent=2)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
