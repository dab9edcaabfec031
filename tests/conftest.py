"""Test-wide settings: float64 available, hypothesis reproducible and jit-friendly,
one persistent compilation cache for the whole session.

Which tests are ``slow`` is marked in their own files (``pytestmark`` or
``@pytest.mark.slow``): ``pytest -m "not slow"`` runs the rest."""

import os
import shutil
import tempfile

import hypothesis
import jax

# Tests pass explicit dtypes; x64 only makes float64 available to them.
jax.config.update("jax_enable_x64", True)
# Eight CPU devices for the sharded-sweep tests (before any JAX op); code that
# does not shard uses the first, as on a one-device machine.
jax.config.update("jax_num_cpu_devices", 8)

hypothesis.settings.register_profile(
  "vae_jax",
  max_examples=40,
  deadline=None,
  derandomize=True,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile("vae_jax")

# Many tests build the same small programs (an epoch, an evaluation) anew:
# one on-disk compilation cache, made by the first process (pytest, or its
# xdist controller) and inherited through the environment by its workers and
# the CLIs the tests start, compiles each once. A cached program is the same
# executable, so no number changes; a fresh session starts empty.
_CACHE_OWNER = "VAE_JAX_TEST_CACHE" not in os.environ
if _CACHE_OWNER:
  os.environ["VAE_JAX_TEST_CACHE"] = tempfile.mkdtemp(prefix="vae_jax-jit-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["VAE_JAX_TEST_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
jax.config.update("jax_compilation_cache_dir", os.environ["VAE_JAX_TEST_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def pytest_unconfigure(config):
  del config
  if _CACHE_OWNER:
    shutil.rmtree(os.environ["VAE_JAX_TEST_CACHE"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """Tests that share a module- or session-scoped fixture of their test file
  (a finished run, a tiny study) go to one xdist worker (``--dist
  loadgroup``), so the fixture is built once, not once per worker."""
  del config
  import pytest

  for item in items:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
      continue
    shared = sorted(
      f"{item.module.__name__}::{name}"
      for name, defs in info.name2fixturedefs.items()
      if defs[-1].scope in ("module", "session")
      and defs[-1].baseid.endswith(".py")  # a test file's own fixture
    )
    if shared:
      item.add_marker(pytest.mark.xdist_group(shared[0]))
