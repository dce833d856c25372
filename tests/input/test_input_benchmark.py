"""benchmark.py: the measurement functions run and report what they say."""

from __future__ import annotations

from dagan_jax.input import benchmark
from input_helpers import make_folder_clip, params_for


def test_records_per_second_report(tmp_path):
  root = tmp_path / "data"
  for p in range(2):
    make_folder_clip(root / "train" / f"id{p}#v#0#4.mp4", [1, 2, 3, 4])
  params = params_for(root, tmp_path / "cache", frame_shape=[16, 16, 3])
  res = benchmark.measure_records_per_second(
      params, workers=(0,), batch_size=2, num_batches=3, step_seconds=0.5)
  assert res["need_records_per_s"] == 4.0
  r = res["workers=0"]
  assert r["records_per_s"] > 0 and r["first_batch_s"] > 0
  assert r["headroom"] == r["records_per_s"] / 4.0
  res = benchmark.measure_records_per_second(
      params, workers=(0,), batch_size=2, num_batches=2, kind="depth")
  assert res["kind"] == "depth" and "need_records_per_s" not in res
