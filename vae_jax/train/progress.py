"""Progress for people: a bar on a terminal, one plain line per epoch in a log.

Redirected output (a file, a pipe, CI) gets no carriage-return frames: each
epoch prints one line, ``epoch 3/100  loss 120.31  32,000 examples/s``.
"""

import sys
import time

import tqdm


def _terminal() -> bool:
  return sys.stderr.isatty()


class Epochs:
  """Reports finished epochs ``start + 1 .. total``.

  Args:
    start: epochs done before this session (a resumed run).
    total: the last epoch.
    desc: a label (a sweep's group).
    enabled: False prints nothing.
  """

  def __init__(
    self, start: int, total: int, desc: str = "", enabled: bool = True
  ):
    self._total, self._desc, self._enabled = total, desc, enabled
    self._bar = None
    if enabled and _terminal():
      self._bar = tqdm.tqdm(
        initial=start,
        total=total,
        unit="epoch",
        desc=desc or None,
        dynamic_ncols=True,
      )

  def update(self, epoch: int, **values: str) -> None:
    """One epoch done; ``values`` are shown beside it (already formatted)."""
    if self._bar is not None:
      self._bar.set_postfix(values, refresh=False)
      self._bar.update(1)
    elif self._enabled:
      text = "  ".join(f"{k} {v}" for k, v in values.items())
      prefix = f"{self._desc}: " if self._desc else ""
      print(f"{prefix}epoch {epoch}/{self._total}  {text}", flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def batches(iterable, desc: str, enabled: bool):
  """``iterable`` with a bar on a terminal; silent elsewhere, but for one
  line with the time taken once it is done."""
  if not enabled:
    yield from iterable
    return
  if _terminal():
    yield from tqdm.tqdm(iterable, desc=desc, unit="batch", dynamic_ncols=True)
    return
  t0 = time.perf_counter()
  yield from iterable
  print(f"{desc}: done in {time.perf_counter() - t0:.1f} s", flush=True)
