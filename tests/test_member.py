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


def test_equal_configs_reuse_compiled_programs():
  # Members of a group differ by seed, beta, a fixed sigma^2: their builds
  # and the epoch made from them compile nothing the first one did not.
  from jax import monitoring

  compiled = []

  def listener(event, duration, **kw):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      compiled.append(kw.get("fun_name"))

  monitoring.register_event_duration_secs_listener(listener)
  try:
    _check_reuse(compiled)
  finally:
    monitoring.unregister_event_duration_listener(listener)


def _check_reuse(compiled: list) -> None:
  from vae_jax.train import program

  def config(**changes):
    c = default.get_config()
    c.update(dict(hidden_sizes=(24,), latent_dim=3, num_epochs=9, **changes))
    return c

  first = member_lib.build(config(seed=11), (8, 8, 1), steps=5, levels=17)
  mesh = program.make_mesh(jax.devices()[:1])
  make = lambda parts: program.make_epoch(
    parts.graphdef,
    parts.optimizer,
    mesh,
    batch_size=16,
    protocol="dynamic",
    levels=17,
  )
  epoch = make(first)
  assert "jit(init)" in compiled
  compiled.clear()
  second = member_lib.build(
    config(seed=12, beta=2.0, sigma2=0.3), (8, 8, 1), steps=5, levels=17
  )
  assert compiled == []  # the initialisation was not compiled again
  assert second.optimizer is first.optimizer and make(second) is epoch
  # ...and it is the second member's own state, from its own seed.
  pairs = zip(
    jax.tree.leaves(first.state.params), jax.tree.leaves(second.state.params)
  )
  assert any(not np.array_equal(a, b) for a, b in pairs)
  # A learned sigma^2 starts at its value: its own initialisation.
  member_lib.build(
    config(seed=13, likelihood="gaussian", sigma2_mode="learned", sigma2=0.3),
    (8, 8, 1),
    steps=5,
    levels=17,
  )
  assert compiled.count("jit(init)") == 1
