"""What the command-line entry points share (no flags are defined here)."""

import os

import jax


def default_cache_dir() -> str:
  """~/.cache/vae_jax/jax (or under $XDG_CACHE_HOME)."""
  return os.path.join(os.environ.get("XDG_CACHE_HOME",
                                     os.path.expanduser("~/.cache")),
                      "vae_jax", "jax")


def enable_compilation_cache(directory: str) -> None:
  """Caches every compiled program on disk, however quick it was to build."""
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
