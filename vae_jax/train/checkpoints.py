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

import os

import jax

from vae_jax.train import keys


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
    self._manager = None

  def _open(self):
    # orbax costs ~0.5 s of imports: a fresh run pays it at its first save,
    # not before its first epoch.
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
    """Writes ``state`` as the checkpoint of ``epoch``, synchronously."""
    ocp, manager = _orbax(), self._open()
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

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()


def _orbax():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  return ocp


def _is_namedtuple(x) -> bool:
  return isinstance(x, tuple) and hasattr(x, "_fields")


def _to_saveable(state):
  # NamedTuples become dicts of their fields, typed PRNG keys raw uint32 data.
  if _is_namedtuple(state):
    return {f: _to_saveable(getattr(state, f)) for f in state._fields}
  return jax.random.key_data(state) if keys.is_prng_key(state) else state


def _from_saved(saved, template):
  if _is_namedtuple(template):
    return type(template)(
      **{
        f: _from_saved(saved[f], getattr(template, f)) for f in template._fields
      }
    )
  return (
    jax.random.wrap_key_data(saved) if keys.is_prng_key(template) else saved
  )
