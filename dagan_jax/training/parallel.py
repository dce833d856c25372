"""Data parallelism: one ``('data',)`` mesh over every device of every host.

The training steps are *per-device* functions with explicit collectives
(``lax.pmean`` of gradients and metrics; BatchNorm statistics synchronised
over the ``data`` axis like the official ``SyncBatchNorm``), run with
``jax.shard_map`` — ``jax.pmap``'s successor in the installed JAX. State is
replicated (``P()``), the batch is split along its first axis (``P('data')``).

Multi-host: call :func:`initialize_distributed` first (it wraps
``jax.distributed.initialize``); each host then feeds its own shard of the
data (Grain's ``process_index::process_count`` split) and
:func:`global_batch` assembles the process-local arrays into global
``jax.Array``s with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dagan_jax.errors import ConfigError

DATA_AXIS = "data"
log = logging.getLogger(__name__)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           cpu_collectives: str | None = None) -> None:
  """Starts ``jax.distributed`` when several processes take part.

  With no arguments, the environment decides (``jax.distributed.initialize``
  auto-detects TPU pods, SLURM, ...; the variables ``DAGAN_COORDINATOR``,
  ``DAGAN_NUM_PROCESSES`` and ``DAGAN_PROCESS_ID`` select an explicit
  cluster, e.g. several processes on one CPU host). A single process with
  nothing configured does nothing.
  """
  coordinator_address = coordinator_address or os.environ.get("DAGAN_COORDINATOR")
  if num_processes is None and os.environ.get("DAGAN_NUM_PROCESSES"):
    num_processes = int(os.environ["DAGAN_NUM_PROCESSES"])
  if process_id is None and os.environ.get("DAGAN_PROCESS_ID"):
    process_id = int(os.environ["DAGAN_PROCESS_ID"])
  if coordinator_address is None and num_processes is None:
    return
  if cpu_collectives or jax.default_backend() == "cpu":
    jax.config.update("jax_cpu_collectives_implementation",
                      cpu_collectives or "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  log.info("jax.distributed: process %d of %d, %d local / %d global devices",
           jax.process_index(), jax.process_count(), jax.local_device_count(),
           jax.device_count())


def make_mesh(devices: Any = None) -> Mesh:
  """A 1-D ``('data',)`` mesh over ``devices`` (default: all global devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def per_host_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """The batch each host loads; a clear error if it does not divide evenly."""
  n_dev = mesh.devices.size
  n_proc = jax.process_count()
  if global_batch_size % n_dev:
    raise ConfigError(
        f"train_params.batch_size ({global_batch_size}) must be a multiple of "
        f"the number of devices ({n_dev}) for data-parallel training")
  return global_batch_size // n_proc


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local numpy arrays -> global arrays split along axis 0."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree on every device of the mesh (fully replicated)."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  # Every host holds the same values: build global arrays from them.
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(x), np.shape(x)), tree)


def to_host(tree: Any) -> Any:
  """Fully replicated global arrays -> numpy (works on every host)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree_util.tree_map(get, tree)
