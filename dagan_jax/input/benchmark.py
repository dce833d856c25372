"""Input-pipeline benchmarks: records/s and start-up over a cached index.

:func:`measure_records_per_second` times the pair pipeline with 0 and 2
Grain workers (or any worker counts) and, given the training step's time,
puts the rate the trainer needs next to it. :func:`measure_index_startup`
times making a training dataset over a synthetic split of 100k clips whose
metadata is already in the clip-index cache (what every run after the first
pays). ``python -m dagan_jax.input.benchmark [--root ROOT]`` prints both.

Records/s counts pair records (one source + one driving frame, augmented),
measured after the first batch (which includes start-up, reported apart).

Measured on the 2-core development machine while other jobs kept its load
average at 4-8 (so take them as lower bounds; two runs, batch 4):

=========================  ================  =================
records/s                  0 workers         2 workers
=========================  ================  =================
vox_mini mp4 clips         13-18             13-19
VoxCeleb PNG folders       31-35             30-92
HDTF 512 JPEG              17-31             27-28
HDTF 512 -> 256 resized    49-128            49-79
TFDS PNG records           43-131            41-60
=========================  ================  =================

Per record on one core: an mp4 clip costs about 30 ms (decoding runs from
the clip's keyframe up to the later frame; VoxCeleb clips are one GOP), a
PNG folder or TFDS record about 10 ms (two decodes, jitter, conversion). A
2-worker pool takes 2-7 s to start. Cached start-up over 100k clips: 1.1-2.6 s
to scan, 1.4-2.9 s to make the dataset. The trainer's need is
``batch_size / step_seconds`` per host: compare with workers x per-worker rate.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Sequence

from dagan_jax.input import clips as clips_lib
from dagan_jax.input import pipeline


def _default_root() -> pathlib.Path:
  here = pathlib.Path(__file__).resolve().parents[2]
  return pathlib.Path(os.environ.get("DAGAN_SHARED", here.parent / "shared")) / "data" / "vox_mini"


def measure_records_per_second(dataset_params: Any = None, *,
                               root: str | os.PathLike | None = None,
                               layout: str = "vox",
                               workers: Sequence[int] = (0, 2),
                               batch_size: int = 4, num_batches: int = 12,
                               seed: int = 0,
                               step_seconds: float | None = None,
                               read_threads: int | None = None,
                               kind: str = "pair") -> dict[str, Any]:
  """Pair (or depth) records per second of the training pipeline.

  ``dataset_params`` (default: ``root`` with FOMM's augmentation, default
  vox_mini) is read as training reads it. For each worker count returns
  ``{'records_per_s', 'batches_per_s', 'first_batch_s'}``; with
  ``step_seconds`` (the training step's wall time for ``batch_size`` records
  per host) adds ``need_records_per_s = batch_size / step_seconds`` and
  ``headroom`` = measured / needed for each worker count.
  """
  if dataset_params is None:
    dataset_params = pipeline.dataset_params_for(root or _default_root(), layout)
  make = pipeline.make_pair_dataset if kind == "pair" else pipeline.make_depth_dataset
  out: dict[str, Any] = {"batch_size": batch_size, "num_batches": num_batches,
                         "kind": kind, "cpu_count": os.cpu_count(),
                         "root": str(pipeline.param(dataset_params, "root_dir"))}
  need = batch_size / step_seconds if step_seconds else None
  if need:
    out["step_seconds"] = step_seconds
    out["need_records_per_s"] = need
  for n in workers:
    t0 = time.perf_counter()
    ds = make(dataset_params, seed=seed, batch_size=batch_size, num_repeats=100,
              num_workers=n, process_index=0, process_count=1,
              read_threads=read_threads)
    it = iter(ds)
    next(it)
    t1 = time.perf_counter()
    for _ in range(num_batches):
      next(it)
    t2 = time.perf_counter()
    res = {"records_per_s": num_batches * batch_size / (t2 - t1),
           "batches_per_s": num_batches / (t2 - t1),
           "first_batch_s": t1 - t0}
    if need:
      res["headroom"] = res["records_per_s"] / need
    out[f"workers={n}"] = res
    del it, ds
  return out


def make_synthetic_split(folder: str | os.PathLike, num_clips: int, *,
                         clips_per_person: int = 20,
                         cache_dir: str | os.PathLike) -> pathlib.Path:
  """A split folder of ``num_clips`` empty ``.mp4`` files named like VoxCeleb
  clips, with a clip-index cache that describes each as a 100-frame 256x256
  video (so a scan finds everything cached and probes nothing)."""
  root = pathlib.Path(folder)
  sdir = root / "train"
  sdir.mkdir(parents=True, exist_ok=True)
  rows = {}
  for i in range(num_clips):
    name = f"id{i // clips_per_person:05d}#vid{i:07d}#000000#000100.mp4"
    p = sdir / name
    with open(p, "wb"):
      pass
    st = os.stat(p)
    rows[name] = ["video", 100, 256, 256, 25.0, "RGB", st.st_mtime_ns,
                  st.st_size, None]
  cfile = clips_lib._cache_file(pathlib.Path(cache_dir), sdir, "train")  # pylint: disable=protected-access
  clips_lib._write_cache(cfile, sdir, None, rows)  # pylint: disable=protected-access
  return root


def measure_index_startup(num_clips: int = 100_000, *,
                          folder: str | os.PathLike | None = None,
                          repeats: int = 3) -> dict[str, Any]:
  """Seconds to make a training dataset over ``num_clips`` cached clips.

  Times (best of ``repeats``) :func:`clips.scan_split` (list the split, stat
  every clip, read the cache) and the whole ``build_record_dataset`` (scan,
  checks, person groups, Grain dataset), without reading any frame.
  """
  tmp = None
  if folder is None:
    tmp = tempfile.TemporaryDirectory(prefix="dagan_startup_")
    folder = tmp.name
  try:
    t0 = time.perf_counter()
    cache = pathlib.Path(folder) / "cache"
    root = make_synthetic_split(pathlib.Path(folder) / "data", num_clips,
                                cache_dir=cache)
    setup = time.perf_counter() - t0
    scan, build = [], []
    for _ in range(repeats):
      t = time.perf_counter()
      index = clips_lib.scan_split(root, "train", "vox", cache_dir=cache)
      scan.append(time.perf_counter() - t)
      assert index.stats["probed"] == 0 and len(index.clips) == num_clips
      params = pipeline.dataset_params_for(root, "vox", cache_dir=str(cache))
      t = time.perf_counter()
      pipeline.build_record_dataset(params, seed=0, num_repeats=1,
                                    process_index=0, process_count=1)
      build.append(time.perf_counter() - t)
    return {"num_clips": num_clips, "scan_s": min(scan),
            "make_dataset_s": min(build), "setup_s": setup,
            "persons": len(index.persons)}
  finally:
    if tmp is not None:
      tmp.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--root", default=None)
  ap.add_argument("--layout", default="vox")
  ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  ap.add_argument("--batch-size", type=int, default=4)
  ap.add_argument("--num-batches", type=int, default=12)
  ap.add_argument("--step-seconds", type=float, default=None)
  ap.add_argument("--startup-clips", type=int, default=100_000)
  ap.add_argument("--cache-dir", default=None)
  args = ap.parse_args(argv)
  params = pipeline.dataset_params_for(args.root or _default_root(), args.layout,
                                       cache_dir=args.cache_dir)
  if args.layout == "hdtf":
    params.update(frame_shape=[256, 256, 3], resize_frames=True)
  res = {"records": measure_records_per_second(
      params, workers=args.workers, batch_size=args.batch_size,
      num_batches=args.num_batches, step_seconds=args.step_seconds)}
  if args.startup_clips:
    res["startup"] = measure_index_startup(args.startup_clips)
  print(json.dumps(res, indent=2))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
