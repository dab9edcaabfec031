"""What the command-line entry points share (no flags are defined here)."""

import os

import jax

import vae_jax.train

# Mistakes and failures a user can act on: one line, no traceback.
USER_ERRORS = (
  vae_jax.train.ConfigError,
  vae_jax.train.DataError,
  vae_jax.train.DataUnavailableError,
  vae_jax.train.NonFiniteLossError,
)


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
