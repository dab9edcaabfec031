"""The result of one trained member: one typed record behind every output.

A :class:`Result`'s fields are what ``summary.json`` (a single run), each row
of a sweep's ``results.csv`` and ``results.json``, and the terminal tables
hold; nothing else writes those keys. Test numbers are in nats per example
(``units``); ``None`` where a number does not apply (a diverged member's test
numbers, sigma^2 of a decoder without one, bits/dim where the likelihood is
not a normalised one of the data).
"""

import dataclasses
import datetime
import functools
import importlib.metadata
import math
import os
import platform
import subprocess
from typing import Any

import jax
import numpy as np

UNITS = "nats per example (bits_per_dim: bits per data dimension)"


@dataclasses.dataclass(frozen=True)
class Result:
  """One member's outcome. Fields in the order the tables show them."""

  name: str  # "beta=0.5,sigma2=0.01"; "" for a run
  member: int  # index in its sweep (0 for a run)
  group: int  # its program's index (0 for a run)
  source: str
  data_protocol: str
  likelihood: str
  sigma2_mode: str
  beta: float
  sigma2: float | None  # the config's; None without sigma^2
  seed: int
  free_bits: float
  free_bits_mode: str  # per_example | batch (Kingma et al. 2016)
  kl_warmup_epochs: int
  latent_dim: int
  test_elbo: float | None
  test_rate: float | None
  test_distortion: float | None
  test_sse: float | None  # squared error behind a Gaussian's
  test_nll: float | None  # importance-weighted, nll_samples
  nll_samples: int
  bits_per_dim: float | None
  active_units: int | None
  kl_per_dim: list[float] | None
  eval_sigma2: float | None  # the sigma^2 the test numbers used
  diverged: bool
  diverged_step: int | None
  epochs: int
  steps: int
  num_train: int
  num_test: int
  group_members: int
  train_seconds: float
  timed_epochs: int  # epochs whose times train_seconds sums
  examples_per_second: float
  eval_seconds: float
  # What it trained (Burda et al. 2016's "VAE, k" and "IWAE, k"); defaults
  # for records written before these fields.
  objective: str = "elbo"  # elbo | iwae
  train_samples: int = 1  # k
  iwae_gradient: str = "reparam"  # reparam | dreg (Tucker et al. 2019)
  axes: dict = dataclasses.field(default_factory=dict)  # a sweep's values
  units: str = UNITS
  provenance: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    """The JSON-ready dict (summary.json; a row of results.json)."""
    return dataclasses.asdict(self)

  @classmethod
  def of_member(
    cls,
    summary: dict,
    member,
    *,
    group: int,
    dataset,
    bits_offset: float | None,
    sigma2_used: float | None,
    diverged_step: int,
    steps: int,
    epochs: int,
    group_members: int,
    records: list[dict],
    eval_seconds: float,
    provenance: dict,
  ) -> "Result":
    """One member's Result from its evaluation summary.

    Args:
      summary: :func:`vae_jax.train.evaluation.summarize` of its test set.
      member: its :class:`~vae_jax.train.member.Member` (config, name, axes,
        index).
      group: its group's index (0 for a run).
      dataset: the :class:`~vae_jax.train.data.Dataset` it trained on.
      bits_offset: nats per dimension added before bits/dim, or None where
        the likelihood is not a normalised one of the data (no bits/dim).
      sigma2_used: the sigma^2 its test numbers used, or None.
      diverged_step: its first non-finite step (1-based); 0 if none. A
        diverged member has no test numbers.
      steps: optimiser steps it took.
      epochs: epochs its group trained.
      group_members: K.
      records: its epoch records (``metrics.jsonl``), for the timings.
      eval_seconds: the time of its group's final evaluation.
      provenance: :func:`provenance`.
    """
    config = member.config
    scored = not diverged_step
    test = lambda value: value if scored else None
    sse = (
      squared_error(summary["distortion"], sigma2_used, dataset.num_dims)
      if sigma2_used is not None
      and config.sigma2_mode != "per_pixel"
      and config.likelihood == "gaussian"  # the SSE behind a Gaussian's
      else None
    )
    # Epoch 1 includes compilation: the throughput leaves it out.
    steady = [r for r in records if r["epoch"] > 1] or records
    return cls(
      name=member.name or "",
      member=member.index,
      group=group,
      source=dataset.name,
      data_protocol=dataset.protocol,
      likelihood=config.likelihood,
      sigma2_mode=config.sigma2_mode,
      beta=config.beta,
      sigma2=config.sigma2 if sigma2_used is not None else None,
      seed=config.seed,
      free_bits=config.free_bits,
      free_bits_mode=config.free_bits_mode,
      kl_warmup_epochs=config.kl_warmup_epochs,
      latent_dim=config.latent_dim,
      test_elbo=test(plain_float(summary["elbo"])),
      test_rate=test(plain_float(summary["rate"])),
      test_distortion=test(plain_float(summary["distortion"])),
      test_sse=test(plain_float(sse)),
      test_nll=test(plain_float(summary["nll"])),
      nll_samples=summary["nll_samples"],
      bits_per_dim=test(
        None if bits_offset is None else plain_float(summary["bits_per_dim"])
      ),
      active_units=test(summary["active_units"]),
      kl_per_dim=test(summary["kl_per_dim"]),
      eval_sigma2=test(
        None if sigma2_used is None else plain_float(np.float32(sigma2_used))
      ),
      diverged=not scored,
      diverged_step=diverged_step or None,
      epochs=epochs,
      steps=steps,
      num_train=len(dataset.train),
      num_test=summary["num_examples"],
      group_members=group_members,
      train_seconds=sum(r["seconds"] for r in records),
      timed_epochs=len(records),
      examples_per_second=(
        sum(r["examples"] for r in steady)
        / max(sum(r["seconds"] for r in steady), 1e-9)
      ),
      eval_seconds=eval_seconds,
      objective=config.objective,
      train_samples=config.train_samples,
      iwae_gradient=config.iwae_gradient,
      axes=dict(member.axes),
      provenance=provenance,
    )


# Fields a CSV row and a table leave out: lists and nested records.
NESTED = ("kl_per_dim", "axes", "provenance")
CSV_COLUMNS = tuple(
  f.name for f in dataclasses.fields(Result) if f.name not in NESTED
)


def plain_float(value) -> float | None:
  """A float for JSON: float32 values as their shortest decimal (0.01, not
  0.009999999776482582); None for None or non-finite values."""
  if value is None:
    return None
  if (
    isinstance(value, (np.floating, jax.Array))
    and np.dtype(getattr(value, "dtype", np.float64)) == np.float32
  ):
    value = float(str(np.float32(value)))
  value = float(value)
  return value if math.isfinite(value) else None


def squared_error(distortion: float, sigma2: float, num_dims: int) -> float:
  """The squared error per example behind a Gaussian distortion (nats) with
  one shared sigma^2: ``2 sigma2 (distortion - (D/2) log(2 pi sigma2))``."""
  return (
    2 * sigma2 * (distortion - 0.5 * num_dims * math.log(2 * math.pi * sigma2))
  )


def format_table(results: list[Result]) -> str:
  """The results as a text table; empty cells where a value is None (a
  diverged member's test numbers, a non-Gaussian member's sigma^2)."""
  columns = (
    ("member", "member", "d"),
    ("likelihood", "likelihood", "s"),
    ("beta", "beta", "g"),
    ("sigma2", "sigma2", "g"),
    ("seed", "seed", "d"),
    ("elbo", "test_elbo", ".3f"),
    ("rate", "test_rate", ".3f"),
    ("distortion", "test_distortion", ".3f"),
    ("sse", "test_sse", ".3f"),
    ("nll", "test_nll", ".3f"),
    ("units", "active_units", "d"),
    ("diverged", "diverged", ""),
  )
  cells = [[name for name, _, _ in columns]]
  for r in results:
    cells.append(
      [
        "" if getattr(r, key) is None else format(getattr(r, key), spec)
        for _, key, spec in columns
      ]
    )
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  return "\n".join(
    " ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells
  )


def provenance() -> dict:
  """Where and with what the numbers were made: package versions, the git
  commit of the code (where it is a checkout), the device, the machine and
  the date (UTC)."""
  device = jax.devices()[0]
  return dict(
    vae_jax=_version("vae_jax"),
    git_commit=_git_commit(),
    jax=jax.__version__,
    jaxlib=_version("jaxlib"),
    flax=_version("flax"),
    optax=_version("optax"),
    python=platform.python_version(),
    platform=device.platform,
    device=device.device_kind,
    device_count=jax.device_count(),
    process_count=jax.process_count(),
    cpu=_cpu(),
    cpu_count=os.cpu_count(),
    date=datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"
    ),
  )


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    if package == "vae_jax":  # run from a checkout, not installed
      from vae_jax import __version__

      return __version__
    return None


@functools.cache
def _git_commit() -> str | None:
  """The commit of the checkout this code was loaded from ("+dirty" when it
  has uncommitted changes), or None outside a git checkout."""
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    run = functools.partial(
      subprocess.run,
      cwd=package,
      capture_output=True,
      text=True,
      timeout=5,
      check=True,
    )
    top = run(["git", "rev-parse", "--show-toplevel"]).stdout.strip()
    # An installed copy inside some other checkout (a venv in a repo) is not
    # that checkout's code.
    if os.path.realpath(top) != os.path.dirname(os.path.realpath(package)):
      return None
    commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
    dirty = run(
      ["git", "status", "--porcelain", "--untracked-files=no"]
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "")


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(
        l.split(":", 1)[1].strip() for l in f if l.startswith("model name")
      )
  except (OSError, StopIteration):
    return platform.processor()


def fields_of(result: Result) -> dict[str, Any]:
  """A CSV row: every scalar field, None as an empty cell."""
  return {
    c: "" if getattr(result, c) is None else getattr(result, c)
    for c in CSV_COLUMNS
  }
