"""The package as users get it: the wheel built from the repository's sources.

Builds the wheel offline (no build isolation: setuptools comes from this
environment) from a copy of the tracked and untracked-but-not-ignored files,
checks what it ships and what it requires, installs it into an empty folder
and uses it from a process that cannot see the repository.
"""

import email.parser
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Needed by the losses: always installed.
CORE = ("jax", "numpy")
# Needed only to train: behind the `train` extra.
TRAIN_ONLY = ("flax", "optax", "orbax-checkpoint", "matplotlib")


def _run(cmd, **kwargs):
  """Runs `cmd`; on failure the assertion shows its output."""
  result = subprocess.run(
    cmd, capture_output=True, text=True, check=False, **kwargs
  )
  assert result.returncode == 0, (
    f"{cmd} exited {result.returncode}\n"
    f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
  )
  return result


def _source_files():
  """Tracked and untracked-not-ignored files, relative to the repository."""
  listed = _run(
    ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT
  ).stdout
  # A tracked file deleted in the working tree is still listed: skip it.
  return [p for p in listed.split("\0") if p and (ROOT / p).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  if shutil.which("git") is None or not (ROOT / ".git").exists():
    pytest.skip("needs a git checkout of the repository")
  src = tmp_path_factory.mktemp("src")
  files = _source_files()
  for rel in files:
    dest = src / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / rel, dest)
  out = tmp_path_factory.mktemp("wheelhouse")
  _run(
    [
      sys.executable,
      "-m",
      "pip",
      "wheel",
      "--no-deps",
      "--no-build-isolation",
      "--no-index",
      "--disable-pip-version-check",
      "-w",
      str(out),
      str(src),
    ]
  )
  wheels = list(out.glob("vae_jax-*.whl"))
  assert len(wheels) == 1, wheels
  return wheels[0], files


def _metadata(wheel_path):
  with zipfile.ZipFile(wheel_path) as zf:
    (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(zf.read(name).decode())


def _requirement_name(requirement):
  """`orbax-checkpoint>=0.12; extra == "train"` -> `orbax-checkpoint`."""
  spec = requirement.split(";")[0].strip()
  for i, ch in enumerate(spec):
    if not (ch.isalnum() or ch in "-_."):
      spec = spec[:i]
      break
  return spec.lower().replace("_", "-")


@pytest.mark.slow
def test_wheel_ships_the_library_and_only_the_library(wheel):
  wheel_path, sources = wheel
  with zipfile.ZipFile(wheel_path) as zf:
    names = set(zf.namelist())
  assert "vae_jax/__init__.py" in names
  assert "vae_jax/py.typed" in names
  # Every module of the package ships, subpackages included.
  modules = {
    p for p in sources if p.startswith("vae_jax/") and p.endswith(".py")
  }
  assert modules <= names, sorted(modules - names)
  stray = sorted(
    n for n in names if n.startswith(("tests/", "benchmarks/", "experiments/"))
  )
  assert not stray, stray
  top_level = {n.split("/")[0] for n in names}
  assert all(t == "vae_jax" or t.endswith(".dist-info") for t in top_level), (
    top_level
  )


def test_wheel_requires_jax_and_numpy_and_puts_training_behind_an_extra(wheel):
  metadata = _metadata(wheel[0])
  assert "train" in metadata.get_all("Provides-Extra", [])
  requires = metadata.get_all("Requires-Dist", [])
  unconditional = {_requirement_name(r) for r in requires if ";" not in r}
  assert set(CORE) <= unconditional, requires
  for name in TRAIN_ONLY:
    entries = [r for r in requires if _requirement_name(r) == name]
    assert entries, (name, requires)
    for entry in entries:
      marker = entry.split(";", 1)[1] if ";" in entry else ""
      assert marker.replace("'", '"').split() == ["extra", "==", '"train"'], (
        entry
      )


_CHILD = textwrap.dedent("""
    import os
    import sys

    import numpy as np

    import vae_jax

    target = os.path.realpath(sys.argv[1])
    where = os.path.realpath(vae_jax.__file__)
    assert where.startswith(target + os.sep), (where, target)
    assert "flax" not in sys.modules, "import vae_jax imported flax"

    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x = (rng.random((5, 3, 4)) < 0.5).astype(np.float32)
    logits = rng.normal(scale=3.0, size=(5, 3, 4)).astype(np.float32)
    got = jax.vmap(vae_jax.bernoulli_log_likelihood)(jnp.asarray(x),
                                                     jnp.asarray(logits))
    l = logits.astype(np.float64)
    xs = x.astype(np.float64)
    log_sigmoid = lambda v: -np.logaddexp(0.0, -v)
    want = np.sum(xs * log_sigmoid(l) + (1 - xs) * log_sigmoid(-l),
                  axis=(1, 2))
    assert got.shape == (5,), got.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert "flax" not in sys.modules, "the losses imported flax"
    print("OK")
""")


@pytest.mark.slow
def test_installed_wheel_works_without_the_repository(wheel, tmp_path):
  target = tmp_path / "site"
  target.mkdir()
  _run(
    [
      sys.executable,
      "-m",
      "pip",
      "install",
      "--no-deps",
      "--no-index",
      "--disable-pip-version-check",
      "--target",
      str(target),
      str(wheel[0]),
    ]
  )
  assert (target / "vae_jax" / "py.typed").is_file()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
  }
  env["PYTHONPATH"] = str(target)
  env["JAX_PLATFORMS"] = "cpu"
  result = _run(
    [sys.executable, "-c", _CHILD, str(target)],
    cwd=elsewhere,
    env=env,
    timeout=300,
  )
  assert result.stdout.strip().splitlines()[-1] == "OK", result.stdout
