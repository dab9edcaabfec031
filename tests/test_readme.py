"""The README's code blocks run, and give the numbers they claim."""

import contextlib
import io
import math
import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.slow

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_usage_snippets_run_and_are_right():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert len(blocks) == 2
  namespace = {}
  with contextlib.redirect_stdout(io.StringIO()):
    for block in blocks:
      exec(compile(block, str(README), "exec"), namespace)
  x = np.asarray(namespace["x"], np.float64)
  # Near-zero weights: logits ~ 0 cost D log 2; the KL is ~0.
  np.testing.assert_allclose(namespace["loss"], 784 * math.log(2), rtol=1e-3)
  np.testing.assert_allclose(namespace["recon"], -784 * math.log(2), rtol=1e-6)
  expected = np.mean(
    np.sum(-((x - 0.5) ** 2) / 0.2 - 0.5 * np.log(2 * np.pi * 0.1), axis=1)
  )
  np.testing.assert_allclose(namespace["gauss"], expected, rtol=1e-5)
  assert all(jnp.all(jnp.isfinite(g)) for g in namespace["grads"].values())
