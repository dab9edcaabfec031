"""The accelerator benchmark runs end to end, at tiny sizes on the CPU, so it
is known to work before a GPU is lent."""

import json

import pytest

from benchmarks import accelerator

pytestmark = pytest.mark.slow


def test_accelerator_benchmark_runs_at_tiny_sizes(tmp_path):
  out = tmp_path / "ACCELERATOR.md"
  assert accelerator.main(["--tiny", f"--out={out}"]) == 0
  text = out.read_text()
  record = json.loads((tmp_path / "ACCELERATOR.json").read_text())
  assert record["tiny"] and "--tiny: sizes shrunk" in text
  assert [t["batch_size"] for t in record["throughput"]] == [16, 32]
  assert all(t["examples_per_second"] > 0 for t in record["throughput"])
  sweep = record["sweep"]
  assert sweep["members"] == 4 and sweep["ratio"] > 0
  assert sweep["ratio"] == pytest.approx(
    sweep["sweep_seconds_per_epoch"] / sweep["one_member_seconds_per_epoch"]
  )
  nll = record["nll"]
  assert nll["images"] == 40 and nll["samples"] == 8 and nll["seconds"] > 0
  for needle in (
    "training, batch 16",
    "sweep / one member",
    "<= 60 s",
    record["provenance"]["jax"],
  ):
    assert needle in text
