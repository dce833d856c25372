"""Two Grain worker processes: the same stream as 0 workers, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from dagan_jax.input import pipeline
from input_helpers import make_folder_clip, params_for


@pytest.mark.slow
def test_two_workers_same_stream_and_exact_resume(tmp_path):
  root = tmp_path / "data"
  for p in range(4):
    make_folder_clip(root / "train" / f"id{p}#v#0#6.mp4",
                     [40 * p + 3 * i for i in range(6)], size=(24, 24))
  params = params_for(root, tmp_path / "cache", frame_shape=[24, 24, 3])
  make = lambda workers: pipeline.make_pair_dataset(
      params, seed=7, batch_size=4, num_repeats=3, num_workers=workers,
      process_index=0, process_count=1)

  serial = iter(make(0))
  reference = [next(serial) for _ in range(6)]

  it = iter(make(2))
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  rest = [next(it) for _ in range(3)]
  for got, want in zip(first + rest, reference):
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)

  resumed = iter(make(2))
  resumed.set_state(state)
  for want in reference[3:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # A 2-worker state also resumes a 0-worker iterator? No: the states differ
  # in form; resuming needs the same worker count (documented).
