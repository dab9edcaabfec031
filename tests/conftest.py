"""Test-wide settings: float64 available, hypothesis reproducible and jit-friendly.

Which tests are ``slow`` is marked in their own files (``pytestmark`` or
``@pytest.mark.slow``): ``pytest -m "not slow"`` runs the rest."""

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
