"""The work directory of a run or a sweep: made once, used by one process,
resumed only with a config that keeps its trajectory.

:func:`prepare` creates it or says in one line why it cannot be used (a file
is in the way, a parent is a file, no permission). :func:`locked` holds an OS
lock (``fcntl.flock`` on ``<workdir>/.lock``) for the whole run: a second
process that tries to use the same workdir stops at once, told which process
holds it, on which host and since when. The kernel drops the lock when its
process ends, however it ends (a SIGKILL too), so a stale lock never blocks.
:func:`check_resumable` compares the config with the one the workdir holds
(:func:`resume_conflicts`). Where groups keep their checkpoints is the
group's layout (:mod:`vae_jax.train.group`).
"""

from collections.abc import Callable
import contextlib
import datetime
import fcntl
import json
import os
import socket

from absl import logging

from vae_jax.train import config as config_lib
from vae_jax.train import group as group_lib

LOCK_FILE = ".lock"


class WorkdirError(RuntimeError):
  """A workdir that cannot be used; the message says why."""


def prepare(workdir: str) -> str:
  """Creates ``workdir`` (and its parents) if missing; returns its absolute
  path.

  Raises:
    WorkdirError: it is a file, lies under a file, or cannot be created.
  """
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"workdir {workdir} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except (NotADirectoryError, FileExistsError):
    raise WorkdirError(
      f"workdir {workdir} cannot be created: a part of its path is a file"
    ) from None
  except OSError as e:
    raise WorkdirError(
      f"workdir {workdir} cannot be created: {e.strerror}"
    ) from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise WorkdirError(f"workdir {workdir} is not writable")
  return path


@contextlib.contextmanager
def locked(workdir: str, enabled: bool = True):
  """Holds ``workdir``'s lock for the duration of the ``with`` block.

  Args:
    workdir: an existing directory (see :func:`prepare`).
    enabled: False does nothing (processes other than 0 of a multi-process
      sweep: process 0 holds the lock for all of them).

  Raises:
    WorkdirError: another live process holds the lock; the message names
      its process id, host and start time.
  """
  if not enabled:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirError(_holder_message(workdir, fd)) from None
    os.ftruncate(fd, 0)
    holder = dict(
      pid=os.getpid(),
      host=socket.gethostname(),
      since=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    os.fsync(fd)
    yield
  finally:
    os.close(fd)  # releases the lock


def _holder_message(workdir: str, fd: int) -> str:
  try:
    holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
  except ValueError:
    holder = {}
  return (
    f"{workdir} is in use by process {holder.get('pid', '?')} on "
    f"{holder.get('host', '?')} since {holder.get('since', '?')}; wait for "
    "it to finish or use another workdir"
  )


# Keys a resumed run may change: they do not touch the training trajectory.
RESUMABLE_CHANGES = frozenset(
  {
    "num_epochs",
    "eval_every",
    "nll_samples",
    "nll_chunk_size",
    "eval_batch_size",
    "checkpoint_every",
    "progress_bar",
    # A key of older configs (the epoch's form); it never changed numbers.
    "scan_epoch",
  }
)


# Keys added after runs were first saved, each with the value that a run
# saved without it trained with: such a run resumes under that value.
ADDED_KEYS = {
  "train_examples": 0,
  "init": "lecun",
  "output_bias": "zero",
  "encoder_variance": "log_variance",
  "objective": "elbo",
  "train_samples": 1,
  "iwae_gradient": "reparam",
  "adam_b1": 0.9,
  "adam_b2": 0.999,
  "adam_variant": "standard",
  "mixture_components": 5,
}


# Why a key that is otherwise free to change on resume is not, here.
_SCHEDULE_DEPENDS = (
  "the cosine schedule decays the learning rate to 0 over num_epochs, so "
  "changing it changes every step already taken"
)


def resume_conflicts(saved: dict, config: dict) -> list[str]:
  """Keys whose values differ between a saved run and this one and would
  change its trajectory up to the checkpoint: resuming with these is refused.

  ``num_epochs`` may change (the run trains on, or stops), except under
  ``lr_schedule='cosine'``, whose rate at every step depends on it. The
  ``burda`` schedule's boundaries are fixed epochs (3^i), independent of
  ``num_epochs``. A key of :data:`ADDED_KEYS` that ``saved`` lacks has its
  value there.
  """
  saved = {**{k: v for k, v in ADDED_KEYS.items() if k in config}, **saved}
  keys = (set(saved) | set(config)) - RESUMABLE_CHANGES
  if config.get("lr_schedule") == "cosine":
    keys.add("num_epochs")
  return sorted(
    k for k in keys if _plain(saved.get(k)) != _plain(config.get(k))
  )


def _plain(v):
  return list(v) if isinstance(v, tuple) else v


def _reason(key: str) -> str:
  return f" ({_SCHEDULE_DEPENDS})" if key.endswith("num_epochs") else ""


def has_checkpoints(workdir: str) -> bool:
  """Whether training ever saved anything under ``workdir``: a checkpoint of
  a run or of a sweep's group, or a finished group's results."""
  groups = group_lib.sweep_directories(workdir)
  if any(os.path.exists(os.path.join(g, group_lib.RESULTS)) for g in groups):
    return True
  folders = [os.path.join(d, group_lib.CHECKPOINTS) for d in [workdir, *groups]]
  return any(os.path.isdir(f) and os.listdir(f) for f in folders)


def check_resumable(
  workdir: str,
  config: dict,
  conflicts: Callable[[dict, dict], list[str]] = resume_conflicts,
  what: str = "run",
) -> None:
  """Refuses to resume ``workdir`` if its ``config.json`` differs from
  ``config`` in keys that ``conflicts(saved, config)`` names (dotted paths
  such as ``"base.beta"`` for nested configs).

  A workdir with a config but no checkpoint is not a run yet (it stopped
  before its first save): any config may start there, and a line says the
  old config.json is replaced.

  Raises:
    ConfigError naming each key with its saved and its new value.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except ValueError:
    saved = None
  if not has_checkpoints(workdir):
    if saved != json.loads(json.dumps(config)):
      logging.warning(
        "%s holds a config but no checkpoint (a %s that stopped before its "
        "first save); starting this one there, replacing its config.json",
        workdir,
        what,
      )
    return
  if saved is None:
    raise config_lib.ConfigError(
      f"{path} is not valid JSON; restore it or use a new workdir"
    )
  if keys := conflicts(saved, config):
    details = ", ".join(
      f"{k}: saved {_lookup(saved, k)!r}, now {_lookup(config, k)!r}"
      f"{_reason(k)}"
      for k in keys
    )
    raise config_lib.ConfigError(
      f"{workdir} holds a {what} with a different config ({details}); "
      "resume with the same values or use a new workdir"
    )


def _lookup(tree: dict, dotted: str):
  value: object = tree
  for part in dotted.split("."):
    value = value.get(part) if isinstance(value, dict) else None
  return value
