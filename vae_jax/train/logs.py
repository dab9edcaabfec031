"""Per-epoch metrics: ``metrics.jsonl`` (one JSON object a line) and TensorBoard.

A single run logs one record per epoch; a group of named members (a sweep)
logs one record per member per epoch, with its ``"member"`` name, and each
member has its own TensorBoard run, ``tensorboard/<name>/``, named by its
hyperparameters, plus an hparams summary once it is evaluated.

On resume the log is cut back to the epochs the restored checkpoint covers,
so a run killed between logging an epoch and checkpointing it does not log
that epoch twice; TensorBoard is told the same through ``purge_step``.
"""

import json
import os
from typing import Any, TextIO

from absl import logging

from vae_jax.train import files


class MetricsLog:
  """Appends records ``{"epoch": int, name: number, ...}`` to both logs.

  Args:
    workdir: the run's folder; writes ``metrics.jsonl`` and ``tensorboard/``.
    last_epoch: the epoch the run resumes after (0 for a fresh run); later
      records already in the file are dropped.
    writer: False keeps records in memory only (processes other than 0).
  """

  def __init__(self, workdir: str, last_epoch: int = 0, writer: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._writer_enabled = writer
    self.records = []
    self._file: TextIO | None = None
    if writer:
      self.records = [
        r for r in read_records(self.path) if r["epoch"] <= last_epoch
      ]
      if gaps := missing_epochs(self.records, last_epoch):
        logging.warning(
          "%s lacks the records of epoch(s) %s (deleted or cut short?); "
          "train_seconds will cover only the logged epochs (timed_epochs in "
          "the results)",
          self.path,
          gaps,
        )
      files.write_text(
        self.path, "".join(json.dumps(r) + "\n" for r in self.records)
      )
      self._file = open(self.path, "a")
    self._tb_dir = os.path.join(workdir, "tensorboard")
    self._purge_step = last_epoch + 1
    self._tb: dict[str | None, Any] = {}  # opened at the first record

  def write(self, records: list[dict]) -> None:
    """Logs one epoch: a record per member (one for a single run), each with
    an integer ``epoch`` and, in a sweep, the member's ``member`` name."""
    self.records.extend(records)
    if self._file is None:  # not the writer
      return
    self._file.write("".join(json.dumps(r) + "\n" for r in records))
    self._file.flush()
    os.fsync(self._file.fileno())
    for record in records:
      writer = self._writer(record.get("member"))
      for name, value in record.items():
        if (
          name != "epoch"
          and isinstance(value, (int, float))
          and not (isinstance(value, bool))
        ):
          writer.add_scalar(name, value, record["epoch"])
      writer.flush()

  def of(self, member: str | None) -> list[dict]:
    """The records of one member (``None``: a single run's)."""
    return [r for r in self.records if r.get("member") == member]

  def hparams(self, member: str | None, hparams: dict, metrics: dict) -> None:
    """TensorBoard's hparams summary of a member: its hyperparameters and
    final test metrics (None values left out)."""
    if not self._writer_enabled:
      return
    from tensorboardX import summary  # imported only where a log is written

    clean = lambda d: {k: v for k, v in d.items() if v is not None}
    metrics = {f"hparam/{k}": v for k, v in clean(metrics).items()}
    # Through the member's own writer: SummaryWriter.add_hparams opens a
    # second one in the same folder, and two writers opened in the same
    # second name one events file and corrupt it.
    writer = self._writer(member)
    for event in summary.hparams(clean(hparams), metrics):
      writer.file_writer.add_summary(event)
    for name, value in metrics.items():
      writer.add_scalar(name, value)
    writer.flush()

  def _writer(self, member: str | None):
    # tensorboardX is slow to import (it imports PyTorch where that is
    # installed): paid after the first epoch, not before.
    if member not in self._tb:
      import tensorboardX  # imported only where a log is written

      directory = (
        self._tb_dir
        if member is None
        else os.path.join(self._tb_dir, member.replace("/", "_"))
      )
      self._tb[member] = tensorboardX.SummaryWriter(
        directory, purge_step=self._purge_step
      )
    return self._tb[member]

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    for writer in self._tb.values():
      writer.close()


def missing_epochs(records: list[dict], last_epoch: int) -> str:
  """Epochs 1..last_epoch with no record, as ranges (``"1-8, 11"``); ``""``
  when none is missing."""
  have = {r["epoch"] for r in records}
  gaps, start = [], None
  for e in range(1, last_epoch + 2):
    if e <= last_epoch and e not in have:
      start = e if start is None else start
    elif start is not None:
      gaps.append(f"{start}" if start == e - 1 else f"{start}-{e - 1}")
      start = None
  return ", ".join(gaps)


def read_records(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl`` (empty if it does not exist).

  A line that is not a JSON record (a last line cut short by a kill, a line
  damaged by hand) is skipped; a damaged line before the last is reported
  with a warning naming the file and the line.
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
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(
        record.get("epoch"), int
      ):
        raise ValueError("not a record")
      records.append(record)
    except ValueError:
      if any(l.strip() for l in lines[i + 1 :]):
        logging.warning(
          "%s: line %d is not a JSON record; skipped", path, i + 1
        )
  return records
