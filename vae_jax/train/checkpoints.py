"""Checkpoints of the whole training state with orbax.

A checkpoint holds a run's TrainState (step, parameters, optimiser state, PRNG
key), or a sweep's stacked and sharded states, saved under the number of
finished epochs. Sharded arrays are written and read shard by shard; under
``jax.distributed`` every process calls ``save`` and ``restore`` and the
directory must be on a file system all of them share. Orbax writes each one to a
temporary folder and renames it when complete, so a run killed mid-save keeps
its previous checkpoint (:mod:`vae_jax.train.files` does the same for single
files).
"""

import contextlib
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import jax

from vae_jax import prng


class Checkpointer:
  """Saves and restores a state under ``directory/<epoch>``.

  The state is a NamedTuple (a :class:`~vae_jax.training.TrainState`, or a
  NamedTuple holding one) of arrays and pytrees; typed PRNG keys among its
  fields are stored as their raw key data.

  Args:
    directory: where checkpoints go (created if missing).
    max_to_keep: how many of the latest to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._max_to_keep = max_to_keep
    self._manager: Any = None  # an orbax CheckpointManager, once opened

  def _open(self):
    # orbax is slow to import: a fresh run pays it at its first save, not
    # before its first epoch.
    if self._manager is None:
      ocp = _orbax()
      options = ocp.CheckpointManagerOptions(
        max_to_keep=self._max_to_keep,
        enable_async_checkpointing=False,
        create=True,
      )
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    return self._manager

  def latest_epoch(self) -> int | None:
    """The newest complete checkpoint's epoch, or None."""
    if not os.path.isdir(self.directory) or not os.listdir(self.directory):
      return None  # a fresh run: no need to ask orbax
    return self._open().latest_step()

  def save(self, epoch: int, state) -> None:
    """Writes ``state`` as the checkpoint of ``epoch``, synchronously. A
    Ctrl-C during the save takes effect once it is complete."""
    ocp, manager = _orbax(), self._open()
    with _interrupt_after():
      manager.save(
        epoch, args=ocp.args.StandardSave(_to_saveable(state)), force=True
      )
      manager.wait_until_finished()

  def restore(self, epoch: int, template):
    """Reads the checkpoint of ``epoch`` into ``template``'s structure,
    shapes, dtypes and shardings."""
    ocp = _orbax()
    target = jax.tree.map(
      ocp.utils.to_shape_dtype_struct, _to_saveable(template)
    )
    saved = self._open().restore(epoch, args=ocp.args.StandardRestore(target))
    return _from_saved(saved, template)

  def restore_latest(self, template) -> tuple[int, object]:
    """The newest checkpoint that restores: ``(epoch, state)``, or
    ``(0, template)`` where there is none.

    A checkpoint that fails to restore (garbage bytes, truncated files, an
    emptied folder) is moved aside to ``<directory>.unreadable/<epoch>`` (kept,
    not deleted; by process 0 alone), a warning naming it and the reason is
    logged, and the next older one is tried.

    Raises:
      CheckpointError: checkpoints exist but none restores.
    """
    if self.latest_epoch() is None:
      return 0, template
    failed = []
    for epoch in sorted(self._open().all_steps(), reverse=True):
      try:
        return epoch, self.restore(epoch, template)
      except Exception as e:  # any bad data
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        failed.append(epoch)
        moved = self._move_aside(epoch)
        logging.warning(
          "checkpoint %s could not be restored (%s); %strying the previous one",
          os.path.join(self.directory, str(epoch)),
          reason,
          f"moved to {moved}; " if moved else "",
        )
    raise CheckpointError(
      f"no checkpoint in {self.directory} could be restored (epochs "
      f"{failed}, moved to {self.directory}.unreadable); delete the workdir "
      "or use another one to start afresh"
    )

  def _move_aside(self, epoch: int) -> str | None:
    if jax.process_index() != 0:
      return None
    source = os.path.join(self.directory, str(epoch))
    target = os.path.join(self.directory + ".unreadable", str(epoch))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.exists(target):
      target += f"-{time.strftime('%Y%m%dT%H%M%S')}"
    os.replace(source, target)
    # A fresh manager: one that failed a restore keeps what it inferred.
    self._manager.close()
    self._manager = None
    return target

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()


class CheckpointError(RuntimeError):
  """No checkpoint of a workdir could be restored."""


@contextlib.contextmanager
def _interrupt_after():
  """Holds SIGINT back for the duration of the block (main thread only) and
  raises the KeyboardInterrupt after it, so a save is never cut in half."""
  if (
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
  ):
    yield
    return
  received = []
  signal.signal(signal.SIGINT, lambda *_: received.append(True))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  if received:
    raise KeyboardInterrupt


def _orbax():
  import orbax.checkpoint as ocp

  return ocp


def _is_namedtuple(x) -> bool:
  return isinstance(x, tuple) and hasattr(x, "_fields")


def _to_saveable(state):
  # NamedTuples become dicts of their fields, typed PRNG keys raw uint32 data.
  if _is_namedtuple(state):
    return {f: _to_saveable(getattr(state, f)) for f in state._fields}
  return jax.random.key_data(state) if prng.is_key(state) else state


def _from_saved(saved, template):
  if _is_namedtuple(template):
    return type(template)(
      **{
        f: _from_saved(saved[f], getattr(template, f)) for f in template._fields
      }
    )
  return jax.random.wrap_key_data(saved) if prng.is_key(template) else saved
