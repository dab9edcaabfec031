"""vae_jax.prng: Threefry-2x32 against its published answers, and every draw
bit for bit against jax.random's own."""

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import prng

SHAPES = [(), (1,), (7,), (128, 784), (3, 5, 2), (64, 28, 28, 1)]


def _keys():
  base = jax.random.key(0)
  return [
    base,
    jax.random.key(2**31 - 1),
    jax.random.split(base, 5)[3],
    jax.random.fold_in(base, 12345),
  ]


class ThreefryTest(parameterized.TestCase):
  @parameterized.parameters(
    # Known answers of Threefry-2x32 with 20 rounds (Salmon et al. 2011,
    # the Random123 distribution's kat_vectors): key, counter -> output.
    ((0x0, 0x0), (0x0, 0x0), (0x6B200159, 0x99BA4EFE)),
    (
      (0xFFFFFFFF, 0xFFFFFFFF),
      (0xFFFFFFFF, 0xFFFFFFFF),
      (0x1CB996FC, 0xBB002BE7),
    ),
    (
      (0x13198A2E, 0x03707344),
      (0x243F6A88, 0x85A308D3),
      (0xC4923A9C, 0x483DF7A0),
    ),
  )
  def test_known_answers(self, key, counter, expected):
    u = lambda v: jnp.asarray(v, jnp.uint32)
    out = prng._threefry_2x32(
      u(key[0]), u(key[1]), u(counter[0]), u(counter[1])
    )
    self.assertEqual(tuple(int(o) for o in out), expected)


class SameAsJaxRandomTest(parameterized.TestCase):
  @parameterized.parameters(*SHAPES)
  @pytest.mark.slow
  def test_bits(self, *shape):
    for key in _keys():
      got = jax.jit(prng.bits, static_argnums=1)(key, shape)
      want = jax.random.bits(key, shape, jnp.uint32)
      self.assertEqual(got.dtype, jnp.uint32)
      np.testing.assert_array_equal(got, want)

  @parameterized.parameters(*SHAPES)
  @pytest.mark.slow
  def test_uniform(self, *shape):
    for key in _keys():
      got = prng.uniform(key, shape)
      want = jax.random.uniform(key, shape, jnp.float32)
      self.assertEqual(got.dtype, jnp.float32)
      np.testing.assert_array_equal(got, want)
      self.assertTrue(np.all((got >= 0) & (got < 1)))

  @pytest.mark.slow
  def test_bernoulli(self):
    rng = np.random.default_rng(0)
    # Every 8-bit level's probability, including 0 and 1.
    p = jnp.asarray(rng.integers(0, 256, (64, 784)) / 255, jnp.float32)
    for key in _keys():
      np.testing.assert_array_equal(
        jax.jit(prng.bernoulli)(key, p), jax.random.bernoulli(key, p)
      )

  @pytest.mark.slow
  def test_under_vmap_over_keys(self):
    keys = jax.random.split(jax.random.key(3), 6)
    p = jnp.full((6, 50), 0.3, jnp.float32)
    got = jax.jit(jax.vmap(prng.bernoulli))(keys, p)
    want = jax.vmap(jax.random.bernoulli)(keys, p)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
      jax.vmap(lambda k: prng.bits(k, (4, 3)))(keys),
      jax.vmap(lambda k: jax.random.bits(k, (4, 3), jnp.uint32))(keys),
    )

  @pytest.mark.slow
  def test_other_keys_and_settings_fall_back_to_jax_random(self):
    key = jax.random.key(1, impl="rbg")
    np.testing.assert_array_equal(
      prng.bits(key, (5, 4)), jax.random.bits(key, (5, 4), jnp.uint32)
    )
    raw = jax.random.PRNGKey(4)  # legacy uint32[2] key
    np.testing.assert_array_equal(
      prng.uniform(raw, (9,)), jax.random.uniform(raw, (9,), jnp.float32)
    )
    key = jax.random.key(2)
    with jax.threefry_partitionable(False):
      np.testing.assert_array_equal(
        prng.bits(key, (33,)), jax.random.bits(key, (33,), jnp.uint32)
      )
    p64 = np.full(10, 0.5)  # not float32
    np.testing.assert_array_equal(
      prng.bernoulli(key, p64), jax.random.bernoulli(key, p64)
    )

  @pytest.mark.slow
  def test_bernoulli_frequencies(self):
    # Independent of jax.random: each level's frequency over 512 x 784 draws
    # within 5 standard errors of level / 255.
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, (512, 784))
    x = np.asarray(
      prng.bernoulli(jax.random.key(9), jnp.asarray(levels / 255, jnp.float32))
    )
    for level in (0, 1, 17, 128, 254, 255):
      mask = levels == level
      p = level / 255
      se = np.sqrt(p * (1 - p) / mask.sum())
      self.assertLessEqual(abs(x[mask].mean() - p), 5 * se + 1e-12, level)


class SplitTest(parameterized.TestCase):
  @parameterized.parameters(1, 2, 3, 31, 1000)
  @pytest.mark.slow
  def test_split(self, num):
    for key in _keys():
      got = jax.jit(prng.split, static_argnums=1)(key, num)
      want = jax.random.split(key, num)
      self.assertEqual(got.shape, (num,))
      np.testing.assert_array_equal(
        jax.random.key_data(got), jax.random.key_data(want)
      )
      # And the keys draw the same numbers.
      np.testing.assert_array_equal(
        jax.random.bits(got[-1], (3,)), jax.random.bits(want[-1], (3,))
      )
    keys = jax.random.split(jax.random.key(8), 4)
    np.testing.assert_array_equal(
      jax.random.key_data(jax.vmap(prng.split)(keys)),
      jax.random.key_data(jax.vmap(jax.random.split)(keys)),
    )
