"""Test-wide settings: float64 available, hypothesis reproducible and jit-friendly.

Which tests are ``slow`` is marked in their own files (``pytestmark`` or
``@pytest.mark.slow``): ``pytest -m "not slow"`` runs the rest."""

import os
import shutil
import tempfile

import hypothesis
import jax
import pytest

# The tests' programs are small and run once or twice: XLA's compile time is
# most of the suite's time, and LLVM's optimisation passes most of that.
# Lower them for the tests' processes (and the CLIs they start, which inherit
# the environment); set before the first JAX op creates the CPU backend.
_FAST_COMPILE = (
  "--xla_backend_optimization_level=0",
  "--xla_llvm_disable_expensive_passes=true",
)
_flags = os.environ.get("XLA_FLAGS", "").split()
os.environ["XLA_FLAGS"] = " ".join(
  _flags + [f for f in _FAST_COMPILE if f not in _flags]
)

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

# One folder for the whole session, shared by pytest-xdist's workers: made by
# the first process (pytest, or xdist's controller) and inherited by the
# workers through the environment; removed when that process ends.
_SHARED_OWNER = "VAE_JAX_TEST_SHARED" not in os.environ
if _SHARED_OWNER:
  os.environ["VAE_JAX_TEST_SHARED"] = tempfile.mkdtemp(prefix="vae_jax-tests-")


def pytest_unconfigure(config):
  del config
  if _SHARED_OWNER:
    shutil.rmtree(os.environ["VAE_JAX_TEST_SHARED"], ignore_errors=True)


@pytest.fixture(scope="session")
def shared_dir() -> str:
  """A folder every worker of this session sees (for a costly fixture that
  one worker builds and the others read back, under a file lock)."""
  return os.environ["VAE_JAX_TEST_SHARED"]


def pytest_collection_modifyitems(config, items):
  """Modules marked ``heavy`` (whole trainings, minutes of compiling) run
  first: under ``--dist loadfile`` a worker takes one module at a time in
  this order, so the long ones start at once and the short ones fill in the
  end, rather than one worker finishing a long module alone."""
  del config
  heavy = {
    item.nodeid.split("::")[0] for item in items if "heavy" in item.keywords
  }
  items.sort(key=lambda item: item.nodeid.split("::")[0] not in heavy)
