"""Per-epoch metrics: ``metrics.jsonl`` (one JSON object a line) and TensorBoard.

On resume the log is cut back to the epochs the restored checkpoint covers,
so a run killed between logging an epoch and checkpointing it does not log
that epoch twice; TensorBoard is told the same through ``purge_step``.
"""

import json
import os

from vae_jax import checkpoints


class MetricsLog:
  """Appends records ``{"epoch": int, name: number, ...}`` to both logs.

  Args:
    workdir: the run's folder; writes ``metrics.jsonl`` and ``tensorboard/``.
    last_epoch: the epoch the run resumes after (0 for a fresh run); later
      records already in the file are dropped.
  """

  def __init__(self, workdir: str, last_epoch: int = 0):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.records = [r for r in read_records(self.path)
                    if r["epoch"] <= last_epoch]
    checkpoints.write_text(
        self.path, "".join(json.dumps(r) + "\n" for r in self.records))
    self._file = open(self.path, "a")
    self._tb_dir = os.path.join(workdir, "tensorboard")
    self._purge_step = last_epoch + 1
    self._tb = None  # opened at the first record (see _writer)

  def write(self, record: dict) -> None:
    """Logs one epoch's record (it must have an integer ``epoch``)."""
    self.records.append(record)
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    os.fsync(self._file.fileno())
    writer = self._writer()
    for name, value in record.items():
      if name != "epoch" and isinstance(value, (int, float)):
        writer.add_scalar(name, value, record["epoch"])
    writer.flush()

  def _writer(self):
    # tensorboardX takes ~0.1 s to import, and ~1.7 s more where PyTorch is
    # installed (it imports torch): paid after the first epoch, not before.
    if self._tb is None:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb = tensorboardX.SummaryWriter(self._tb_dir,
                                            purge_step=self._purge_step)
    return self._tb

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()


def read_records(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl`` (empty if it does not exist).

  A last line cut short by a kill is ignored; any other bad line is an error.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1 and any(l.strip() for l in lines[i + 1:]):
        raise ValueError(f"{path}: line {i + 1} is not JSON") from None
  return records
