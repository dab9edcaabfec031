"""What the command-line entry points share: their common flags, their
prologue, and one-line errors."""

import ast
import collections
import os
import re
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags
import jax

import vae_jax.train

# Mistakes and failures a user can act on: one line, no traceback.
USER_ERRORS = (
  vae_jax.train.ConfigError,
  vae_jax.train.DataError,
  vae_jax.train.DataUnavailableError,
  vae_jax.train.NonFiniteLossError,
  vae_jax.train.WorkdirError,
  vae_jax.train.CheckpointError,
)
_OVERRIDE = re.compile(r"--(config\.[\w.]+)(=|$)")


def define_common(config_file: str, what: str, workdir: str, workdir_help: str):
  """The flags every command has: ``--config`` (a shipped config file,
  ``what`` it configures), ``--workdir`` and ``--compilation_cache``.

  Returns:
    ``(config, workdir, cache)``, the flag holders.
  """
  config = define_config(
    "config", config_path(config_file), f"{what} config (a .py file)."
  )
  workdir_flag = flags.DEFINE_string("workdir", workdir, workdir_help)
  cache = flags.DEFINE_string(
    "compilation_cache",
    default_cache_dir(),
    "JAX persistent compilation cache folder ('' = off).",
  )
  return config, workdir_flag, cache


def start(argv: list[str], config_holder, cache_holder):
  """A command's prologue: no stray arguments, the config read (one
  ``error:`` line if it cannot be), library logs at WARNING and the
  compilation cache on. Returns the config."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  config = config_value(config_holder)
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if cache_holder.value:
    enable_compilation_cache(cache_holder.value)
  return config


def guarded(work, workdir: str):
  """``work()``, with a user's mistake as one ``error:`` line (exit 1; a
  workdir's problem named by its flag) and Ctrl-C as a note on how to
  resume (exit 130)."""
  try:
    return work()
  except vae_jax.train.WorkdirError as e:
    fail(f"--workdir: {e}", code=1)
  except USER_ERRORS as e:
    fail(str(e), code=1)
  except KeyboardInterrupt:
    interrupted(workdir)


def fail(message: str, code: int = 2):
  """Ends the program with one line, ``error: <message>``, on stderr."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake as one ``error:`` line.

  A ``--config.<key>`` given twice is refused (ml_collections would
  concatenate two tuple values); a value of the wrong type ends the program
  with the reason, not a traceback. (Unknown keys and unreadable config files
  surface when the config is first read: :func:`config_value`.)
  """
  given = collections.Counter(
    m.group(1) for arg in argv[1:] if (m := _OVERRIDE.match(arg))
  )
  if twice := sorted(k for k, n in given.items() if n > 1):
    fail(f"--{twice[0]} is given {given[twice[0]]} times; give it once")
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # any bad flag
    fail(_one_line(e))


def define_config(name: str, default: str, help_text: str):
  """``config_flags.DEFINE_config_file``, locked. ml_collections reads the
  command line's ``--<name>.<key>`` overrides here, when the flag is
  defined; an unknown key (with a did-you-mean) or a value that cannot
  become its key's type ends the program with one ``error:`` line."""
  try:
    return config_flags.DEFINE_config_file(
      name, default, help_text, lock_config=True
    )
  except (AttributeError, KeyError) as e:
    fail(f"unknown config key {_one_line(e)}")
  except Exception as e:  # a bad file or value
    fail(f"--{name}: {_one_line(e)}")


def config_value(holder):
  """The config of a ``DEFINE_config_file`` flag, its file loaded and the
  overrides applied; a file that cannot be loaded, an unknown key (with a
  did-you-mean) or a value that does not fit its key ends the program with
  one ``error:`` line."""
  try:
    value = holder.value
    value.keys()  # a file that failed to load raises on first use
    return value
  except (AttributeError, KeyError) as e:
    fail(f"unknown config key {_one_line(e)}")
  except Exception as e:  # a bad file or value
    fail(f"--{holder.name}: {_one_line(e)}")


def _one_line(error: Exception) -> str:
  text = str(error)
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    try:  # ml_collections puts the repr of its message in the error
      text = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      pass
  return " ".join(line.strip() for line in text.splitlines() if line.strip())


def interrupted(workdir: str):
  """Ends the program after Ctrl-C with one line on how to resume."""
  print(
    f"\nstopped (Ctrl-C). Checkpoints so far are kept in {workdir}: run the "
    "same command to resume.",
    file=sys.stderr,
    flush=True,
  )
  sys.exit(130)


def config_path(name: str) -> str:
  """A shipped config file, found from this file (so a command works from any
  working directory)."""
  return os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "configs", name
  )


def default_cache_dir() -> str:
  """~/.cache/vae_jax/jax (or under $XDG_CACHE_HOME)."""
  return os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
    "vae_jax",
    "jax",
  )


def enable_compilation_cache(directory: str) -> None:
  """Caches every compiled program on disk, however quick it was to build."""
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
