r"""vae_jax side by side with PyTorch, sweeps against sequential runs, and FLOP/s.

Run from the repository root (PyTorch from requirements-torch.txt)::

  python -m benchmarks.compare            # ~25 min on 2 CPU cores
  python -m benchmarks.compare --rounds 2 # a quicker, noisier pass

It rewrites ``benchmarks/RESULTS.md`` (and the raw figures in
``benchmarks/results.json``) with the machine, library versions, date and
this command. Every measurement runs in a fresh subprocess, one at a time,
and the contenders take turns (A B C A B C ...) so that drifts of the
machine fall on all of them alike; each figure is the median over rounds
with its min-max, and each ratio is the ratio of medians with the min-max of
the per-round ratios. What is timed:

1. training throughput (examples/s over epochs 3+, the first two are warm-up)
   of vae_jax (a whole epoch in one jit; one jitted step per batch) and of
   ``benchmarks/torch_vae.py`` (eager, fused Adam, torch.compile), at batch
   128 and 1024: the same model, loss, data and binarization;
2. whole processes of 10 epochs (start to exit, test ELBO included) and the
   time from process start to the end of the first epoch: vae_jax with an
   empty ("cold") and a filled ("warm") persistent compilation cache, the
   PyTorch forms, and ``experiments/train.py`` (the real command);
3. a K-member vmapped sweep against the same K members one after another
   (K = 8 and 64; training only, compilation reported apart);
4. the importance-weighted NLL with k = 5000 samples: test images per second;
5. achieved GFLOP/s: XLA's cost analysis of one training step times the
   measured steps per second, against the measured float32 matmul peak
   (2048^3 with numpy and with XLA), and against the step's own matrix
   products timed alone.

``--probe NAME`` runs one in-process measurement and prints one JSON line
(the runner calls itself this way; see ``_PROBES``).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_MD = os.path.join(ROOT, "benchmarks", "RESULTS.md")
RESULTS_JSON = os.path.join(ROOT, "benchmarks", "results.json")
WARM_UP_EPOCHS = 2
TIMEOUT_S = 900

# Targets on a 2-core CPU (issue 13; ratios are vae_jax over the other).
TARGETS = dict(
  vs_bare=0.9,
  vs_best_torch=1.1,
  nll_ms_per_image=25.0,
  first_epoch_warm_s=3.0,
  main_job_s=50.0,
)


# ----------------------------------------------------------------------------
# Probes: in-process measurements, each printed as one JSON line.


def _median_seconds(fn, repeats: int) -> float:
  fn()  # warm-up (and compilation)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def probe_peak(args) -> dict:
  """float32 matmul GFLOP/s at n x n x n, numpy (its BLAS) and XLA."""
  import jax
  import numpy as np

  n = args.n
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
  flops = 2 * n**3
  numpy_s = _median_seconds(lambda: a @ b, args.repeats)
  ja, jb = jax.device_put(a), jax.device_put(b)
  matmul = jax.jit(lambda x, y: x @ y)
  jax_s = _median_seconds(
    lambda: matmul(ja, jb).block_until_ready(), args.repeats
  )
  return dict(
    n=n, numpy_gflops=flops / numpy_s / 1e9, xla_gflops=flops / jax_s / 1e9
  )


def _model_dots(batch: int):
  """The matrix products of one training step of the 784-400-20 MLP VAE,
  forward and backward (no input gradient for the data), as (m, k, n)."""
  d, h, l = 784, 400, 20
  forward = [(batch, d, h), (batch, h, 2 * l), (batch, l, h), (batch, h, d)]
  weight_grads = [
    (d, batch, h),
    (h, batch, 2 * l),
    (l, batch, h),
    (h, batch, d),
  ]
  input_grads = [(batch, 2 * l, h), (batch, h, l), (batch, d, h)]
  return forward + weight_grads + input_grads


def probe_dots(args) -> dict:
  """The step's matrix products alone, in one jitted program: the ceiling
  that the rest of the step (elementwise work, RNG, Adam) eats into."""
  import jax

  shapes = _model_dots(args.batch_size)
  key = jax.random.key(0)
  operands = [
    (
      jax.random.normal(jax.random.fold_in(key, 2 * i), (m, k)),
      jax.random.normal(jax.random.fold_in(key, 2 * i + 1), (k, n)),
    )
    for i, (m, k, n) in enumerate(shapes)
  ]

  @jax.jit
  def dots(operands):
    return [a @ b for a, b in operands]

  flops = sum(2 * m * k * n for m, k, n in shapes)
  seconds = _median_seconds(
    lambda: jax.block_until_ready(dots(operands)), args.repeats
  )
  return dict(
    batch_size=args.batch_size,
    flops=flops,
    seconds=seconds,
    gflops=flops / seconds / 1e9,
  )


def probe_flops(args) -> dict:
  """XLA's cost analysis of one training step (``training.guarded_step``,
  what one scan iteration of the epoch runs) of the default model at this
  batch size."""
  import functools
  import jax
  import jax.numpy as jnp
  from experiments.configs import default
  from vae_jax.train import member as member_lib
  from vae_jax.train import training

  config = default.get_config()
  config.batch_size = args.batch_size
  parts = member_lib.build(config, (28, 28, 1), 1)
  x = jnp.zeros((args.batch_size, 28, 28, 1), jnp.float32)
  step = jax.jit(
    functools.partial(training.guarded_step, parts.graphdef, parts.optimizer)
  )
  cost = step.lower(
    parts.state, jnp.asarray(True), x, jax.random.key(0), parts.hparams
  ).compile()
  cost = cost.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return dict(
    batch_size=args.batch_size,
    flops=cost["flops"],
    transcendentals=cost.get("transcendentals"),
    bytes_accessed=cost.get("bytes accessed"),
  )


def probe_sweep(args) -> dict:
  """K members (a beta x sigma^2 grid, Gaussian decoder, continuous data)
  trained for E epochs as one vmapped program and one after another."""
  import functools
  import jax
  from experiments.configs import sweep as sweep_configs
  from vae_jax import sweep
  from vae_jax.train import group as group_lib
  from vae_jax.train import member as member_lib
  from vae_jax.train import program
  from vae_jax.train import training

  k, epochs = args.members, args.epochs
  config = sweep_configs.get_config()
  side = 1
  while side * side < k:
    side *= 2
  config.axes.beta = tuple(2.0 ** (i - side // 2) for i in range(side))
  config.axes.sigma2 = tuple(0.01 * 2.0**i for i in range(k // side))
  config.base.num_epochs = epochs
  members = sweep.members(config)
  assert len(members) == k, (len(members), k)
  base = members[0].config

  # The sweep's compile time includes building the group: loading the
  # data, building every member and placing them.
  t0 = time.perf_counter()
  group = group_lib.Group.build(members, mesh=program.make_mesh())
  dataset, steps = group.dataset, group.steps
  static = dict(
    batch_size=base.batch_size, protocol=dataset.protocol, levels=dataset.levels
  )
  epoch_fn = program.make_epoch(
    group.parts.graphdef, group.parts.optimizer, group.mesh, **static
  )
  # K > 1 members always run the checked program (a single member on one
  # device runs epoch_fn.fast first: program.make_epoch).
  state, hparams, shared = group.state, group.hparams, group.raw_train
  compiled = epoch_fn.checked.lower(state, shared, hparams).compile()
  sweep_compile = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(epochs):
    state, metrics = compiled(state, shared, hparams)
  jax.block_until_ready(metrics)
  sweep_train = time.perf_counter() - t0

  # One member alone: the guarded epoch the sweep maps, jitted as it is,
  # its state donated.
  raw_train = jax.device_put(dataset.train)
  t0 = time.perf_counter()
  built = member_lib.build(base, dataset.image_shape, steps)
  one_epoch = jax.jit(
    functools.partial(
      training.train_epoch, built.graphdef, built.optimizer, **static
    ),
    donate_argnums=0,
  )
  one_compiled = one_epoch.lower(built.state, raw_train, built.hparams)
  one_compiled = one_compiled.compile()
  sequential_compile = time.perf_counter() - t0
  sequential_train = 0.0
  for member in members:  # one program serves all: hparams are arguments
    built = member_lib.build(member.config, dataset.image_shape, steps)
    single, one_hparams = built.state, built.hparams
    t0 = time.perf_counter()
    for _ in range(epochs):
      single, metrics = one_compiled(single, raw_train, one_hparams)
    jax.block_until_ready(metrics)
    sequential_train += time.perf_counter() - t0
  examples = k * epochs * steps * base.batch_size
  return dict(
    members=k,
    epochs=epochs,
    devices=group.mesh.size,
    sweep_train_s=sweep_train,
    sweep_compile_s=sweep_compile,
    sequential_train_s=sequential_train,
    sequential_compile_s=sequential_compile,
    sweep_examples_per_second=examples / sweep_train,
    sequential_examples_per_second=examples / sequential_train,
  )


def probe_nll(args) -> dict:
  """Test images per second of the final evaluation (ELBO, k-sample
  importance-weighted NLL, active units: ``evaluation.evaluate``, as
  ``experiments/train.py`` calls it) of a freshly initialised default model,
  with the default config's chunks and batches."""
  import jax
  from experiments.configs import default
  from vae_jax.train import data
  from vae_jax.train import evaluation
  from vae_jax.train import member as member_lib
  from vae_jax.train import program

  config = default.get_config()
  dataset = data.load(config.source, config.protocol)
  images = jax.device_put(data.evaluation_images(dataset)[: args.images])
  parts = member_lib.build(config, dataset.image_shape, 1)
  encode, log_likelihood = program.model_functions(
    parts.graphdef, parts.state.params, None
  )

  def run(n):
    t0 = time.perf_counter()
    evaluation.evaluate(
      encode,
      log_likelihood,
      images[:n],
      jax.random.key(0),
      num_samples=args.samples,
      chunk_size=config.nll_chunk_size,
      batch_size=config.eval_batch_size,
      num_dims=dataset.num_dims,
    )
    return time.perf_counter() - t0

  # Each call compiles its batch function once: the slope between a small
  # and a large call is the time per image, the intercept the fixed cost.
  small = config.eval_batch_size  # whole batches: a partial one is padded
  small_s, large_s = run(small), run(args.images)
  per_image = (large_s - small_s) / (args.images - small)
  fixed = small_s - small * per_image
  return dict(
    images=args.images,
    samples=args.samples,
    small_images=small,
    small_call_s=small_s,
    large_call_s=large_s,
    seconds_per_image=per_image,
    fixed_s=fixed,
    images_per_second=1 / per_image,
    projected_10k_s=fixed + 10_000 * per_image,
  )


_PROBES = dict(
  peak=probe_peak,
  dots=probe_dots,
  flops=probe_flops,
  sweep=probe_sweep,
  nll=probe_nll,
)


# ----------------------------------------------------------------------------
# The runner.


def _run_json_lines(
  command: list[str], env=None
) -> tuple[list[dict], float, float]:
  """Runs a command; returns its JSON stdout lines, launch time (unix) and
  wall seconds. Fails loudly with the command's stderr."""
  launched = time.time()
  t0 = time.perf_counter()
  proc = subprocess.run(
    command,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
    env=env,
    check=False,
  )
  wall = time.perf_counter() - t0
  if proc.returncode:
    raise RuntimeError(
      f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    )
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  return lines, launched, wall


def _probe(name: str, **flags) -> dict:
  command = [sys.executable, "-m", "benchmarks.compare", "--probe", name]
  command += [f"--{k}={v}" for k, v in flags.items()]
  lines, _, _ = _run_json_lines(command)
  return lines[-1]


def _training_run(
  contender: str,
  batch_size: int,
  epochs: int,
  cache: str | None = None,
  python: str = sys.executable,
):
  """One training process; returns its events, launch time and wall time."""
  framework, form = contender.split(":")
  module = (
    "benchmarks.bare_jax"
    if framework == "bare"
    else (f"benchmarks.{framework}_vae")
  )
  command = [
    python,
    "-m",
    module,
    f"--form={form}",
    f"--batch_size={batch_size}",
    f"--epochs={epochs}",
  ]
  if framework == "jax":
    command.append(f"--compilation_cache={cache or ''}")
  return _run_json_lines(command)


def _throughput(events: list[dict]) -> float:
  epochs = [e for e in events if e["event"] == "epoch"]
  return statistics.median(
    e["examples_per_second"] for e in epochs[WARM_UP_EPOCHS:]
  )


def _summary(values: list[float]) -> dict:
  return dict(
    median=statistics.median(values),
    min=min(values),
    max=max(values),
    runs=values,
  )


def _ratio(a: list[float], b: list[float]) -> dict:
  """median(a) / median(b), and the min-max of the per-round a_i / b_i."""
  per_round = [x / y for x, y in zip(a, b)]
  return dict(
    ratio=statistics.median(a) / statistics.median(b),
    min=min(per_round),
    max=max(per_round),
  )


def _log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure_throughput(contenders, batch_size, rounds, epochs, torch_python):
  runs = {c: [] for c in contenders}
  for r in range(rounds):
    for c in contenders:
      python = torch_python if c.startswith("torch") else sys.executable
      events, _, _ = _training_run(c, batch_size, epochs, python=python)
      runs[c].append(_throughput(events))
      _log(
        f"batch {batch_size} round {r + 1}: {c} {runs[c][-1]:,.0f} examples/s"
      )
  return runs


def measure_processes(contenders, rounds, epochs, torch_python, warm_cache):
  """Whole processes: wall time, and launch -> first epoch done."""
  runs = {c: dict(wall=[], first_epoch=[], ready=[]) for c in contenders}
  for r in range(rounds):
    for c in contenders:
      name, _, cache_state = c.partition("@")
      if name == "cli":
        wall, first, ready = _cli_run(
          epochs, warm_cache if cache_state == "warm" else None
        )
      else:
        cache = None
        if cache_state == "warm":
          cache = warm_cache
        elif cache_state == "cold":
          cache = tempfile.mkdtemp(prefix="vae_jax_cold_cache_")
        python = torch_python if name.startswith("torch") else sys.executable
        events, launched, wall = _training_run(name, 128, epochs, cache, python)
        if cache_state == "cold":
          shutil.rmtree(cache, ignore_errors=True)
        first = next(e for e in events if e["event"] == "epoch")["time"]
        ready = next(e for e in events if e["event"] == "ready")["time"]
        first, ready = first - launched, ready - launched
      runs[c]["wall"].append(wall)
      runs[c]["first_epoch"].append(first)
      runs[c]["ready"].append(ready)
      _log(
        f"processes round {r + 1}: {c} whole {wall:.2f} s, first epoch "
        f"done at {first:.2f} s"
      )
  return runs


def _main_job(cache: str) -> dict:
  """The README's main job (``make run`` once .venv is built): the default
  config to the end (training, k = 5000 NLL, figures, checkpoint, summary)
  in a fresh workdir; wall seconds and the summary's test NLL."""
  workdir = tempfile.mkdtemp(prefix="vae_jax_main_")
  command = [
    sys.executable,
    "-m",
    "experiments.train",
    "--config=experiments/configs/default.py",
    f"--workdir={workdir}",
    f"--compilation_cache={cache}",
  ]
  try:
    _, _, wall = _run_json_lines(command)
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return dict(
    wall_s=wall,
    test_nll=summary["test_nll"],
    epochs=summary["epochs"],
    nll_samples=summary["nll_samples"],
    train_seconds=summary["train_seconds"],
    eval_seconds=summary["eval_seconds"],
  )


def _cli_run(epochs: int, cache: str | None) -> tuple[float, float, float]:
  """experiments/train.py for ``epochs`` epochs (NLL with 1 sample):
  wall time and seconds from launch to the first epoch's log record."""
  workdir = tempfile.mkdtemp(prefix="vae_jax_cli_")
  cold = cache is None
  cache = cache or tempfile.mkdtemp(prefix="vae_jax_cold_cache_")
  command = [
    sys.executable,
    "-m",
    "experiments.train",
    f"--workdir={workdir}",
    f"--compilation_cache={cache}",
    f"--config.num_epochs={epochs}",
    "--config.nll_samples=1",
    "--config.progress_bar=False",
  ]
  try:
    _, launched, wall = _run_json_lines(command)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      first = json.loads(f.readline())["wall_time"]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
    if cold:
      shutil.rmtree(cache, ignore_errors=True)
  return wall, first - launched, float("nan")


def _versions(torch_python: str | None) -> dict:
  import flax
  import jax
  import jaxlib
  import numpy as np
  import optax

  versions = dict(
    python=platform.python_version(),
    jax=jax.__version__,
    jaxlib=jaxlib.__version__,
    flax=flax.__version__,
    optax=optax.__version__,
    numpy=np.__version__,
  )
  if torch_python:
    versions["torch"] = subprocess.run(
      [torch_python, "-c", "import torch; print(torch.__version__)"],
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
  return versions


def _machine() -> dict:
  import jax
  from vae_jax.train import results

  info = results.provenance()
  gpu = "none"
  if shutil.which("nvidia-smi"):
    out = subprocess.run(
      ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      check=False,
    ).stdout.strip()
    gpu = out or gpu
  info.update(
    gpu=gpu,
    jax_devices=len(jax.devices()),
    memory_gib=round(
      os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
    ),
  )
  return info


def _has_torch(python: str) -> bool:
  return (
    subprocess.run(
      [python, "-c", "import torch"], capture_output=True, check=False
    ).returncode
    == 0
  )


def run_all(args) -> dict:
  torch_python = args.torch_python if _has_torch(args.torch_python) else None
  if torch_python is None:
    _log(
      f"no torch in {args.torch_python}: PyTorch columns left out "
      "(pip install -r requirements-torch.txt)"
    )
  torch_forms = ["torch:eager", "torch:fused", "torch:compile"]
  # The bare JAX epoch is the floor (issue 13): the same model and math,
  # nothing else; "bare:fused" draws the binarization vae_jax's epoch draws.
  jax_forms = [
    "jax:epoch",
    "jax:step",
    "bare:kernels",
    "bare:fused",
    "bare:stock",
    "bare:none",
  ]
  contenders = jax_forms + (torch_forms if torch_python else [])
  results = dict(
    date=datetime.date.today().isoformat(),
    command=" ".join(["python -m benchmarks.compare"] + sys.argv[1:]),
    machine=_machine(),
    versions=_versions(torch_python),
    rounds=args.rounds,
  )

  _log("matmul peak and the step's products alone")
  results["peak"] = _probe("peak", n=2048, repeats=10)
  results["dots"] = {
    b: _probe("dots", batch_size=b, repeats=50) for b in (128, 1024)
  }
  results["flops"] = {b: _probe("flops", batch_size=b) for b in (128, 1024)}

  results["throughput"] = {}
  for batch_size, epochs in ((128, args.epochs), (1024, 3 * args.epochs)):
    results["throughput"][batch_size] = measure_throughput(
      contenders, batch_size, args.rounds, epochs, torch_python
    )

  warm_cache = tempfile.mkdtemp(prefix="vae_jax_warm_cache_")
  _training_run("jax:epoch", 128, 1, warm_cache)  # fill the cache
  _cli_run(1, warm_cache)
  process_contenders = ["jax:epoch@warm", "jax:epoch@cold", "cli@warm"]
  if torch_python:
    process_contenders += [f + "@" for f in torch_forms]
  results["processes"] = measure_processes(
    process_contenders, args.rounds, 10, torch_python, warm_cache
  )
  shutil.rmtree(warm_cache, ignore_errors=True)

  _log("sweeps")
  results["sweep"] = {
    k: _probe("sweep", members=k, epochs=args.sweep_epochs) for k in (8, 64)
  }
  _log("NLL")
  results["nll"] = _probe("nll", images=args.nll_images, samples=5000)
  _log("the main job (make run), empty then filled compilation cache")
  cache = tempfile.mkdtemp(prefix="vae_jax_main_cache_")
  try:
    results["main_job"] = dict(cold=_main_job(cache), warm=_main_job(cache))
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  return results


# ----------------------------------------------------------------------------
# RESULTS.md


def _fmt(summary: dict, digits: int = 0, scale: float = 1.0) -> str:
  m, lo, hi = (summary[k] * scale for k in ("median", "min", "max"))
  return f"{m:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def _fmt_ratio(r: dict) -> str:
  return f"{r['ratio']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def render(results: dict) -> str:
  """RESULTS.md from the raw results."""
  m, v = results["machine"], results["versions"]
  lines = [
    "# Benchmarks: vae_jax side by side with PyTorch",
    "",
    f"Regenerate with `{results['command']}` from the repository root "
    f"(this file and `benchmarks/results.json` are rewritten). Measured "
    f"{results['date']}.",
    "",
    f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['memory_gib']} GiB, "
    f"GPU: {m['gpu']}; JAX backend {m['platform']} ({m['jax_devices']} "
    f"device(s)). Versions: "
    + ", ".join(f"{k} {val}" for k, val in v.items())
    + ".",
    "",
    "Same job on both sides: mnist5k (4,000 training images), MLP 784-400-20,"
    " Bernoulli decoder, dynamic binarization drawn per batch, Adam 1e-3, "
    "remainder batch dropped (31 steps of 128 an epoch). Every measurement "
    "is a fresh process; contenders take turns in each of "
    f"{results['rounds']} rounds. Figures: median (min-max) over rounds; "
    "ratios: ratio of medians (min-max of per-round ratios).",
    "",
  ]
  peak = results["peak"]
  peak_gflops = max(peak["numpy_gflops"], peak["xla_gflops"])
  tp = results["throughput"]
  has_torch = any(c.startswith("torch") for c in tp[128])

  lines += [
    "## Training throughput (examples/s, epochs 3+)",
    "",
    "| | " + " | ".join(f"batch {b}" for b in tp) + " |",
    "|---|" + "---:|" * len(tp),
  ]
  names = {
    "jax:epoch": "vae_jax, epoch in one jit (default)",
    "jax:step": "vae_jax, one jitted step per batch",
    "bare:kernels": "bare JAX epoch, vae_jax's kernels (the engine's floor)",
    "bare:fused": "bare JAX epoch, vae_jax.prng binarization",
    "bare:stock": "bare JAX epoch, jax.random.bernoulli binarization",
    "bare:none": "bare JAX epoch, no binarization",
    "torch:eager": "PyTorch eager, Adam",
    "torch:fused": "PyTorch eager, fused Adam",
    "torch:compile": "PyTorch, torch.compile",
  }
  for c in tp[128]:
    lines.append(
      f"| {names[c]} | "
      + " | ".join(_fmt(_summary(tp[b][c])) for b in tp)
      + " |"
    )
  if has_torch:
    for c in ("torch:eager", "torch:fused", "torch:compile"):
      lines.append(
        f"| vae_jax / {names[c]} | "
        + " | ".join(
          _fmt_ratio(_ratio(tp[b]["jax:epoch"], tp[b][c])) for b in tp
        )
        + " |"
      )
  lines.append("")

  lines += [
    "## FLOP/s",
    "",
    f"Measured float32 matmul peak (2048^3): numpy "
    f"{peak['numpy_gflops']:.0f} GFLOP/s, XLA {peak['xla_gflops']:.0f}"
    f" GFLOP/s; the peak below is the larger.",
    "",
    "| batch | FLOP per step (XLA cost analysis) | achieved GFLOP/s "
    "| % of peak | the step's matmuls alone, GFLOP/s (% of peak) "
    "| step time in matmuls |",
    "|---:|---:|---:|---:|---:|---:|",
  ]
  for b in tp:
    flops = results["flops"][b]["flops"]
    steps_per_s = statistics.median(tp[b]["jax:epoch"]) / b
    achieved = flops * steps_per_s / 1e9
    dots = results["dots"][b]
    lines.append(
      f"| {b} | {flops / 1e6:,.0f} M | {achieved:.0f} | "
      f"{100 * achieved / peak_gflops:.0f}% | {dots['gflops']:.0f} "
      f"({100 * dots['gflops'] / peak_gflops:.0f}%) | "
      f"{100 * dots['seconds'] * steps_per_s:.0f}% |"
    )
  lines.append("")

  pr = results["processes"]
  pnames = {
    "jax:epoch@warm": "vae_jax (benchmarks/jax_vae.py), warm cache",
    "jax:epoch@cold": "vae_jax (benchmarks/jax_vae.py), cold cache",
    "cli@warm": "experiments/train.py, warm cache (+NLL, figures, checkpoint)",
    "torch:eager@": "PyTorch eager",
    "torch:fused@": "PyTorch fused Adam",
    "torch:compile@": "PyTorch torch.compile",
  }
  lines += [
    "## Whole processes: 10 epochs, start to exit (batch 128)",
    "",
    "| | imports + data (s; vae_jax: + model built) "
    "| first epoch done (s after start) "
    "| whole process (s) |",
    "|---|---:|---:|---:|",
  ]
  for c, r in pr.items():
    ready = (
      _fmt(_summary(r["ready"]), 2)
      if r["ready"] and r["ready"][0] == r["ready"][0]
      else ""
    )
    lines.append(
      f"| {pnames[c]} | {ready} | "
      f"{_fmt(_summary(r['first_epoch']), 2)} | "
      f"{_fmt(_summary(r['wall']), 2)} |"
    )
  if "torch:eager@" in pr:
    lines += [
      "",
      "vae_jax whole process / PyTorch eager's: warm cache "
      + _fmt_ratio(
        _ratio(pr["jax:epoch@warm"]["wall"], pr["torch:eager@"]["wall"])
      )
      + ", cold cache "
      + _fmt_ratio(
        _ratio(pr["jax:epoch@cold"]["wall"], pr["torch:eager@"]["wall"])
      )
      + ".",
    ]
  lines.append("")

  lines += [
    "## Sweeps: K members as one vmapped program vs one after "
    "another (training only)",
    "",
    "| K | epochs | sweep (s) | one after another, one shared "
    "program (s) | speed-up | the same, each compiling its own "
    "program (s) | speed-up | sweep / one member's time "
    "| compile: sweep / one member (s) |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for k, s in results["sweep"].items():
    own = s["sequential_train_s"] + k * s["sequential_compile_s"]
    with_compile = s["sweep_train_s"] + s["sweep_compile_s"]
    lines.append(
      f"| {k} | {s['epochs']} | {s['sweep_train_s']:.2f} | "
      f"{s['sequential_train_s']:.2f} | "
      f"{s['sequential_train_s'] / s['sweep_train_s']:.2f}x | "
      f"{own:.1f} | {own / with_compile:.2f}x (compile included) | "
      f"{k * s['sweep_train_s'] / s['sequential_train_s']:.1f}x | "
      f"{s['sweep_compile_s']:.1f} / {s['sequential_compile_s']:.1f} |"
    )
  lines += [
    "",
    "Members: a beta x sigma^2 grid of Gaussian VAEs (fixed "
    "sigma^2, dequantized grey levels), one process, one device. "
    "'One shared program': one member's compiled epoch reused for "
    "all K (hyperparameters are arguments), which a user's loop in "
    "one process gets; 'each compiling its own': K separate runs "
    "(processes, or changed configs), which pay K compilations.",
    "",
  ]

  n = results["nll"]
  lines += [
    "## Importance-weighted NLL, k = 5000",
    "",
    f"`evaluation.evaluate` as `experiments/train.py` runs it (ELBO, "
    f"IWAE NLL and active units; chunks of 500 samples, batches of 100"
    f" images) on {n['small_images']} and {n['images']} test images: "
    f"{n['small_call_s']:.1f} s and {n['large_call_s']:.1f} s, so "
    f"{n['seconds_per_image'] * 1e3:.0f} ms per image "
    f"({n['images_per_second']:.1f} images/s) after {n['fixed_s']:.1f}"
    f" s of tracing and compilation: {n['projected_10k_s']:.0f} s for "
    f"10,000 images.",
    "",
  ]

  if "main_job" in results:
    mj = results["main_job"]
    lines += [
      "## The main job",
      "",
      "`make run` once .venv is built (`python -m experiments.train "
      f"--config=experiments/configs/default.py`: {mj['cold']['epochs']} "
      f"epochs, the k = {mj['cold']['nll_samples']} NLL of the test set, "
      "figures, checkpoint, summary), start to exit: "
      f"{mj['cold']['wall_s']:.1f} s with an empty compilation cache (a "
      f"fresh clone's first run; training {mj['cold']['train_seconds']:.1f}"
      f" s, evaluation {mj['cold']['eval_seconds']:.1f} s), "
      f"{mj['warm']['wall_s']:.1f} s with it filled; test NLL "
      f"{mj['cold']['test_nll']:.3f} and {mj['warm']['test_nll']:.3f} "
      "nats.",
      "",
    ]
  lines += _targets(results, peak_gflops)
  return "\n".join(lines) + "\n"


def _targets(results, peak_gflops) -> list[str]:
  tp, pr = results["throughput"], results["processes"]
  rows = []

  def row(name, value, target, ok):
    rows.append(
      f"| {name} | {value} | {target} | {'met' if ok else 'NOT met'} |"
    )

  jax128 = tp[128]["jax:epoch"]
  if "bare:fused" in tp[128]:
    r = _ratio(jax128, tp[128]["bare:fused"])
    row(
      "throughput vs the bare JAX epoch, same binarization, batch 128",
      _fmt_ratio(r),
      f">= {TARGETS['vs_bare']:.2f}x",
      r["ratio"] >= TARGETS["vs_bare"],
    )
  if "bare:kernels" in tp[128]:
    r = _ratio(jax128, tp[128]["bare:kernels"])
    rows.append(
      "| (for reference) vs the bare epoch with vae_jax's kernels, batch "
      f"128 | {_fmt_ratio(r)} | | |"
    )
  if "torch:eager" in tp[128]:
    best = max(
      ("torch:eager", "torch:fused", "torch:compile"),
      key=lambda c: statistics.median(tp[128][c]),
    )
    r = _ratio(jax128, tp[128][best])
    row(
      f"throughput vs best PyTorch form ({best}), batch 128",
      _fmt_ratio(r),
      f">= {TARGETS['vs_best_torch']}x",
      r["ratio"] >= TARGETS["vs_best_torch"],
    )
  per_image_ms = 1e3 * results["nll"]["seconds_per_image"]
  row(
    "importance-weighted NLL, k = 5000, per test image",
    f"{per_image_ms:.1f} ms",
    f"<= {TARGETS['nll_ms_per_image']:.0f} ms",
    per_image_ms <= TARGETS["nll_ms_per_image"],
  )
  if "main_job" in results:
    wall = results["main_job"]["cold"]["wall_s"]
    row(
      "the main job (make run, .venv built, empty compilation cache)",
      f"{wall:.1f} s",
      f"<= {TARGETS['main_job_s']:.0f} s",
      wall <= TARGETS["main_job_s"],
    )
  for c in ("jax:epoch@warm", "cli@warm"):
    first = statistics.median(pr[c]["first_epoch"])
    row(
      f"first epoch done after start, warm cache ({c.split('@')[0]})",
      f"{first:.2f} s",
      f"<= {TARGETS['first_epoch_warm_s']} s",
      first <= TARGETS["first_epoch_warm_s"],
    )
  limits = []
  dots = results["dots"][128]
  ceiling = 128 / dots["seconds"]
  limits.append(
    f"- Throughput: the step's matrix products alone, timed without the "
    f"rest, take {dots['seconds'] * 1e3:.2f} ms at batch 128, so even a "
    f"step that were nothing else would train {ceiling:,.0f} examples/s"
  )
  if "torch:compile" in tp[128]:
    best = max(
      statistics.median(tp[128][c])
      for c in ("torch:eager", "torch:fused", "torch:compile")
    )
    limits[-1] += (
      f", {ceiling / best:.2f}x the best PyTorch form and "
      f"{ceiling / statistics.median(tp[128]['torch:eager']):.2f}x"
      " eager"
    )
  limits[-1] += (
    f"; the rest of the step (binarization, elementwise "
    f"likelihood and KL work and their gradients, Adam) takes the"
    f" other {100 - 100 * dots['seconds'] * statistics.median(jax128) / 128:.0f}%."
  )
  ready = statistics.median(pr["jax:epoch@warm"]["ready"])
  limits.append(
    f"- Start-up: importing Python, JAX, Flax and the rest and building the "
    f"group (loading the data, initialising and placing the model) take "
    f"{ready:.2f} s of the {statistics.median(pr['jax:epoch@warm']['first_epoch']):.2f} s to the first epoch"
    + (
      " (PyTorch, imports and data: "
      f"{statistics.median(pr['torch:eager@']['ready']):.2f} s)"
      if "torch:eager@" in pr
      else ""
    )
    + "; tracing the epoch and loading it from the compilation cache take "
    "most of the rest."
  )
  limits.append(
    "- Evaluation: the k = 5000 NLL's decoder matmuls are ~3.2 GFLOP per "
    f"image, {3.2 / peak_gflops * 1e3:.0f} ms at the measured peak; the "
    "rest is the Bernoulli likelihood's elementwise work over 5000 x 784 "
    "logits per image, which XLA:CPU runs in its own loop, not in the "
    "vectorised YNNPACK kernel it uses for chains without a select (the "
    "select makes log p(x|z) exact at infinite logits; a select-free "
    "rewrite was tried and was slower inside the evaluator and the "
    "training step)."
  )
  return [
    "## Targets (issue 13, 2-core CPU)",
    "",
    "| target | measured | wanted | |",
    "|---|---:|---:|---|",
    *rows,
    "",
    "What limits them (from the figures above):",
    "",
    *limits,
    "",
    "GPU targets (64-member sweep <= 2x one member's wall time; "
    "k=5000 NLL of 10,000 images <= 60 s) need a GPU: "
    + (
      f"measured on {results['machine']['gpu']}."
      if results["machine"]["gpu"] != "none"
      else "none on this machine, not measured here."
    ),
    "",
  ]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--probe", choices=sorted(_PROBES))
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument(
    "--epochs",
    type=int,
    default=10,
    help="epochs per throughput run at batch 128 (x3 at "
    "1024); the first two are warm-up",
  )
  parser.add_argument("--sweep_epochs", type=int, default=3)
  parser.add_argument(
    "--nll_images",
    type=int,
    default=300,
    help="a multiple of 100 (the evaluation batch), > 100",
  )
  parser.add_argument(
    "--torch_python",
    default=sys.executable,
    help="a Python with torch==2.13.0 (CPU build)",
  )
  parser.add_argument(
    "--render_only",
    action="store_true",
    help="rewrite RESULTS.md from results.json",
  )
  # Probe arguments.
  for name in ("n", "repeats", "batch_size", "members", "images", "samples"):
    parser.add_argument(f"--{name}", type=int, default=0)
  args = parser.parse_args(argv)
  if args.probe:
    print(json.dumps(_PROBES[args.probe](args)), flush=True)
    return
  if args.render_only:
    with open(RESULTS_JSON) as f:
      results = json.load(f, object_hook=_int_keys)
  else:
    results = run_all(args)
    _write(RESULTS_JSON, json.dumps(results, indent=1))
  text = render(results)
  if os.path.exists(burda_speed_json()):
    from benchmarks import burda_speed

    with open(burda_speed_json()) as f:
      text += "\n" + "\n".join(burda_speed.section(json.load(f)))
  _write(RESULTS_MD, text)
  _log(f"wrote {RESULTS_MD}")


def burda_speed_json() -> str:
  """``benchmarks/burda_speed.py``'s raw figures, its section of RESULTS.md."""
  return os.path.join(ROOT, "benchmarks", "burda_speed.json")


def _int_keys(d: dict) -> dict:
  return {int(k) if k.isdigit() else k: v for k, v in d.items()}


def _write(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


if __name__ == "__main__":
  main()
