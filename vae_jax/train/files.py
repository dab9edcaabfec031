"""Atomic file writes: a file is either its old or its new content, never a part.

Each write goes to a sibling temporary file, is flushed to disk (fsync) and
renamed over the target (``os.replace``, atomic on POSIX), so a run killed at
any moment leaves every output whole.
"""

import json
import os
import tempfile


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
    os.chmod(tmp, 0o644)  # mkstemp's 0600 is too private for results
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_json(path: str, obj) -> None:
  """Writes ``obj`` as indented JSON, atomically."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
