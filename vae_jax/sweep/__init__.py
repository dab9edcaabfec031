"""Sweeps: many VAEs trained as one compiled program per group.

``run(config, workdir)`` trains every member of a sweep config (a training
config ``base``, ``axes`` of values, a ``mode``) through the same engine a
single run uses (:mod:`vae_jax.train.engine`), sharded over every device of
every process, and writes a results table and figures.
"""

from vae_jax.sweep.experiment import run
from vae_jax.sweep.experiment import write_results
from vae_jax.sweep.members import groups
from vae_jax.sweep.members import members
from vae_jax.sweep.members import name
from vae_jax.sweep.members import validate
from vae_jax.sweep.members import VMAPPED

__all__ = [
  "VMAPPED",
  "groups",
  "members",
  "name",
  "run",
  "validate",
  "write_results",
]
