"""What a training run tells its user: progress, scalars, images, JSON lines.

* a progress bar (tqdm) with steps/s, ETA and the latest losses;
* TensorBoard event files (tensorboardX, no TensorFlow needed) under
  ``workdir/tensorboard``: scalars and image grids;
* ``workdir/metrics.jsonl``: one JSON object per logged step (easy to parse
  and to compare runs with).

Only process 0 writes (every host computes the same replicated metrics).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np


class Monitor:
  """Progress bar + TensorBoard + JSON lines for one run."""

  def __init__(self, workdir: str | pathlib.Path, *, total_steps: int,
               initial_step: int = 0, enabled: bool | None = None,
               progress: bool = True, description: str = "train"):
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.workdir = pathlib.Path(workdir)
    self.total_steps = total_steps
    self._bar = None
    self._writer = None
    self._jsonl = None
    self._t0 = time.perf_counter()
    self._step0 = initial_step
    if not self.enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self._writer = SummaryWriter(str(self.workdir / "tensorboard"))
    self._jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")
    if progress:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self._bar = tqdm(total=total_steps, initial=initial_step, desc=description,
                       unit="step", dynamic_ncols=True, file=sys.stderr,
                       smoothing=0.1)

  def steps_per_second(self, step: int) -> float:
    dt = time.perf_counter() - self._t0
    return (step - self._step0) / dt if dt > 0 else float("nan")

  def advance(self, step: int, postfix: Mapping[str, float] | None = None) -> None:
    """Moves the progress bar to ``step`` (1-based count of finished steps)."""
    if self._bar is None:
      return
    self._bar.update(step - self._bar.n)
    if postfix:
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()},
                            refresh=False)

  def scalars(self, step: int, values: Mapping[str, Any],
              prefix: str = "train") -> None:
    """Writes scalars to TensorBoard and one JSON line."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items()}
    for k, v in clean.items():
      if math.isfinite(v):
        self._writer.add_scalar(f"{prefix}/{k}", v, step)
    record = {"step": step, "split": prefix, "time": time.time(),
              **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """An (H, W, 3) float [0, 1] or uint8 image to TensorBoard."""
    if not self.enabled:
      return
    img = np.asarray(image)
    if img.dtype != np.uint8:
      img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    self._writer.add_image(tag, img, step, dataformats="HWC")
    self._writer.flush()

  def write(self, message: str) -> None:
    """Prints a line without breaking the progress bar."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(message, file=sys.stderr)
    else:
      print(message, file=sys.stderr, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
    if self._jsonl is not None:
      self._jsonl.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The JSON lines a run wrote (for tests, notebooks, comparisons)."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
