"""Checkpoints of the whole TrainState with orbax, and atomic file writes.

A checkpoint holds the step, the parameters, the optimiser state and the PRNG
key, saved under the number of finished epochs. Orbax writes each one to a
temporary folder and renames it when complete, so a run killed mid-save keeps
its previous checkpoint; :func:`write_json` and :func:`write_text` do the same
for single files (write a sibling, fsync, ``os.replace``).
"""

import json
import os
import tempfile

import jax
import orbax.checkpoint as ocp

from vae_jax.training import TrainState


class Checkpointer:
  """Saves and restores TrainStates under ``directory/<epoch>``.

  Args:
    directory: where checkpoints go (created if missing).
    max_to_keep: how many of the latest to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=False,
                                           create=True)
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_epoch(self) -> int | None:
    """The newest complete checkpoint's epoch, or None."""
    return self._manager.latest_step()

  def save(self, epoch: int, state: TrainState) -> None:
    """Writes ``state`` as the checkpoint of ``epoch``, synchronously."""
    self._manager.save(epoch, args=ocp.args.StandardSave(_to_saveable(state)),
                       force=True)
    self._manager.wait_until_finished()

  def restore(self, epoch: int, template: TrainState) -> TrainState:
    """Reads the checkpoint of ``epoch`` into ``template``'s structure."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          _to_saveable(template))
    saved = self._manager.restore(epoch,
                                  args=ocp.args.StandardRestore(target))
    return TrainState(step=saved["step"], params=saved["params"],
                      opt_state=saved["opt_state"],
                      key=jax.random.wrap_key_data(saved["key"]))

  def close(self) -> None:
    self._manager.close()


def _to_saveable(state: TrainState) -> dict:
  # Typed PRNG keys are stored as their raw uint32 data.
  return dict(step=state.step, params=state.params, opt_state=state.opt_state,
              key=jax.random.key_data(state.key))


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically: all of it or none of it."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)   # mkstemp's 0600 is too private for results
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_json(path: str, obj) -> None:
  """Writes ``obj`` as indented JSON, atomically."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
