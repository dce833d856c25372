"""The bookkeeping both trainers share: verified, lagged metrics.

A step's metrics are fetched one step late, so the host never makes the
device wait (the next step is already dispatched); before a checkpoint they
are fetched at once, so only verified states are saved. Each fetched step is
checked: a step whose ``finite`` flag is 0 (its loss or gradient was NaN or
Inf; the step then left the state unchanged) raises
:class:`~dagan_jax.errors.NonFiniteLossError` naming the step and the
offending terms, after any checkpoint being written has finished.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from dagan_jax.errors import NonFiniteLossError
from dagan_jax.training import parallel
from dagan_jax.training.checkpointing import Checkpointer
from dagan_jax.training.monitor import Monitor


class LaggedMetrics:
  """Checks and logs each step's metrics, one step behind the device."""

  def __init__(self, monitor: Monitor, ckpt: Checkpointer, *, total_steps: int,
               log_every: int, progress_keys: Mapping[str, str],
               extra: Callable[[int], Mapping[str, Any]] = lambda step: {}):
    self.monitor = monitor
    self.ckpt = ckpt
    self.total_steps = total_steps
    self.log_every = max(int(log_every), 1)
    self.progress_keys = dict(progress_keys)
    self.extra = extra
    self.last: dict[str, float] = {}
    self._pending: tuple[int, Any] | None = None

  def check(self, step: int, metrics: Any) -> dict[str, float]:
    values = {k: float(v) for k, v in parallel.to_host(metrics).items()}
    if values.pop("finite", 1.0) != 1.0:
      bad = sorted(k for k, v in values.items() if not math.isfinite(v)) or [
          "a gradient"]
      self.ckpt.wait()
      raise NonFiniteLossError(
          f"step {step}: non-finite {', '.join(bad)}; the state of step "
          f"{step - 1} is kept and the last checkpoint is step "
          f"{self.ckpt.latest_step()} in {self.ckpt.directory}. Lower the "
          "learning rate, check the data, or use compute_dtype='float32'.")
    return values

  def _process(self, step: int, metrics: Any) -> None:
    values = self.check(step, metrics)
    if step % self.log_every == 0 or step == 1 or step == self.total_steps:
      self.last = values
      self.monitor.scalars(step, {**values, **self.extra(step)})
    self.monitor.advance(step, {label: values.get(key, 0.0)
                                for label, key in self.progress_keys.items()})

  def push(self, step: int, metrics: Any) -> None:
    """Records step ``step``'s metrics; checks and logs the previous step's."""
    if self._pending is not None:
      self._process(*self._pending)
    self._pending = (step, metrics)

  def flush(self) -> None:
    """Checks and logs the pending step now (before a checkpoint)."""
    if self._pending is not None:
      pending, self._pending = self._pending, None
      self._process(*pending)
