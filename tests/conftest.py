"""Test-wide settings: float64 available, hypothesis reproducible and jit-friendly."""

import jax
import hypothesis

# Tests pass explicit dtypes; x64 only makes float64 available to them.
jax.config.update("jax_enable_x64", True)

hypothesis.settings.register_profile(
    "vae_jax", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("vae_jax")
