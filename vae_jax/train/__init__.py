"""Training VAEs with Flax and optax (``pip install "vae_jax[train]"``).

``train_and_evaluate(config, workdir)`` runs one experiment: a config (an
ml_collections ConfigDict, see ``experiments/configs/default.py``) in, a
:class:`Result` (also ``summary.json``), metrics, checkpoints and figures
out. The layers below it, one module each: ``config`` (the keys' rules),
``data`` (sources and protocols), ``models`` (the Flax VAE), ``training``
(the step and the two scanned epochs), ``member`` (one member: its spec and
what its config builds), ``program`` (K members on a device mesh),
``group`` (the members that share a program, built and placed; their
folders), ``engine`` (the one loop, for a run and a sweep's groups),
``evaluation`` (ELBO, IWAE, active units), ``results`` (the record),
``workdir`` (the workdir's lock and resume contract), ``checkpoints``,
``files``, ``logs``, ``progress``, ``figures`` and ``plots``.
"""

from vae_jax.train.checkpoints import CheckpointError
from vae_jax.train.config import ConfigError
from vae_jax.train.data import DataError
from vae_jax.train.data import DataUnavailableError
from vae_jax.train.engine import NonFiniteLossError
from vae_jax.train.engine import Policy
from vae_jax.train.engine import run_group
from vae_jax.train.experiment import train_and_evaluate
from vae_jax.train.group import Group
from vae_jax.train.member import Member
from vae_jax.train.results import Result
from vae_jax.train.workdir import WorkdirError

__all__ = [
  "CheckpointError",
  "WorkdirError",
  "ConfigError",
  "DataError",
  "DataUnavailableError",
  "Group",
  "Member",
  "NonFiniteLossError",
  "Policy",
  "Result",
  "run_group",
  "train_and_evaluate",
]
