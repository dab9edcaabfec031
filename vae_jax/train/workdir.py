"""The work directory of a run or a sweep: made once, used by one process.

:func:`prepare` creates it or says in one line why it cannot be used (a file
is in the way, a parent is a file, no permission). :func:`locked` holds an OS
lock (``fcntl.flock`` on ``<workdir>/.lock``) for the whole run: a second
process that tries to use the same workdir stops at once, told which process
holds it, on which host and since when. The kernel drops the lock when its
process ends, however it ends (a SIGKILL too), so a stale lock never blocks.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket

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
    raise WorkdirError(f"--workdir {workdir} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except (NotADirectoryError, FileExistsError):
    raise WorkdirError(
      f"--workdir {workdir} cannot be created: a part of its path is a file"
    ) from None
  except OSError as e:
    raise WorkdirError(
      f"--workdir {workdir} cannot be created: {e.strerror}"
    ) from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise WorkdirError(f"--workdir {workdir} is not writable")
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
    "it to finish or use another --workdir"
  )
