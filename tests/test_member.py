"""member.build: the jitted initialisation gives the eager one's values."""

import jax
import numpy as np
import pytest

from experiments.configs import default
from vae_jax.train import member as member_lib
from vae_jax.train import training


def _eager(config, image_shape, optimizer):
  """The textbook build: the model initialised op by op, then split."""
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  model = member_lib.build_model(config, image_shape, init_key)
  return training.init_state(model, optimizer, train_key)


@pytest.mark.parametrize(
  "overrides",
  [
    dict(),
    dict(seed=7, architecture="conv", hidden_sizes=(16, 32)),
    dict(likelihood="gaussian", sigma2_mode="per_pixel", sigma2=0.1),
    dict(likelihood="gaussian", sigma2_mode="learned", hidden_sizes=(64, 32)),
  ],
)
def test_jitted_build_equals_the_eager_one_bit_for_bit(overrides):
  config = default.get_config()
  config.update(overrides)
  parts = member_lib.build(config, (28, 28, 1), steps=31)
  graphdef, state = _eager(config, (28, 28, 1), parts.optimizer)
  assert parts.graphdef == graphdef
  got, want = jax.tree.leaves(parts.state), jax.tree.leaves(state)
  assert len(got) == len(want) > 4
  for a, b in zip(got, want):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
