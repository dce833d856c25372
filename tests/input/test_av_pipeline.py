"""Audio-visual windows (dagan_jax.input.av_windows) over three real clips
of av_mini whose prepared files the tests write themselves: real speech
features, synthetic poses, meshes and keypoints that say which frame they
belong to (``pose[t] = t``)."""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dagan_jax.audio import mel as mel_lib
from dagan_jax.audio import speech_features
from dagan_jax.errors import DataError
from dagan_jax.input import av_windows, media
from input_helpers import params_for

CLIPS = ("grid_s1#bbaf2n.mp4", "grid_s1#bbaf3s.mp4", "pcavs_00067#00067.mp4")
BOX = [16.0, -8.0, 240.0]   # reaches above the frame: rows of zeros on top
NUM_KP = 10
ONE_HOST = {"process_index": 0, "process_count": 1}


@pytest.fixture(scope="module")
def av_data(tmp_path_factory, shared_dir):
  """``(root, cache dir, {clip: prepared arrays})`` for the three clips."""
  base = tmp_path_factory.mktemp("av")
  root = base / "root"
  (root / "train").mkdir(parents=True)
  arrays = {}
  for name in CLIPS:
    src = shared_dir / "data" / "av_mini" / "train" / name
    shutil.copy(src, root / "train" / name)
    n, fps, _ = media.probe_video(src)
    t = np.arange(n, dtype=np.float32)
    a2h, _ = speech_features.features_from_file(src, tracker="yin")
    arrays[name] = {
        "num_frames": np.int64(n), "fps": np.float64(fps),
        "a2h_features": a2h.astype(np.float32),
        "mel": mel_lib.mel_from_file(src).astype(np.float32),
        "mesh": np.broadcast_to(t[:, None, None] + np.arange(468)[None, :, None]
                                / 1000.0, (n, 468, 3)).astype(np.float32),
        "face_found": np.arange(n) % 7 != 3,
        "crop_box": np.asarray(BOX, np.float32),
        "pose": (t[:, None] + np.arange(6)[None, :] / 10.0).astype(np.float32),
        "kp_value": np.broadcast_to(t[:, None, None], (n, NUM_KP, 2)
                                    ).astype(np.float32),
        "kp_jacobian": np.broadcast_to(t[:, None, None, None] + np.eye(2),
                                       (n, NUM_KP, 2, 2)).astype(np.float32)}
  return root, base / "cache", arrays


def prepare(folder, arrays, *, drop=(), without_kp=(), changes=None, fmt=1):
  """Writes a prepared folder as ``dagan-jax data prepare`` lays it out."""
  (folder / "train").mkdir(parents=True)
  (folder / "manifest.json").write_text(json.dumps(
      {"format": fmt, "layout": "vox", "root": "", "tools": {},
       "fps": {k: float(v["fps"]) for k, v in arrays.items()}}))
  for name, arrs in arrays.items():
    if name in drop:
      continue
    arrs = dict(arrs, **(changes or {}).get(name, {}))
    if name in without_kp:
      arrs = {k: v for k, v in arrs.items() if not k.startswith("kp_")}
    np.savez(folder / "train" / f"{name}.npz", **arrs)
  return folder


def params(av_data, size=32, **kw):
  root, cache, _ = av_data
  return params_for(root, cache, id_sampling=False,
                    frame_shape=[size, size, 3], **kw)


def independent_crop(frame, box, size):
  """The crop as the module docstring defines it, written another way:
  pad the frame with zeros, slice, resize."""
  x0, y0, side = (int(math.floor(v + 0.5)) for v in box)
  padded = np.pad(frame, ((side, side), (side, side), (0, 0)))
  crop = padded[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side]
  interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
  return cv2.resize(crop, (size, size), interpolation=interp
                    ).astype(np.float32) / 255.0


def records(ds, count=None):
  return [ds[i] for i in range(len(ds) if count is None else count)]


@pytest.mark.parametrize("size", [256, 64])   # enlarged 240 -> 256, shrunk
def test_windows_match_the_clips_and_their_arrays(av_data, tmp_path, size):
  root, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays)
  window = 5
  split = av_windows.open_av_split(params(av_data, size), prep, window=window)
  assert [c.name for c in split.clips] == list(CLIPS) and split.has_kp
  ds = av_windows.build_av_window_dataset(
      params(av_data, size), prep, seed=0, window=window, num_epochs=1,
      with_mesh=True, av_split=split, **ONE_HOST)
  seen = set()
  for rec in records(ds):
    name = CLIPS[int(rec["clip"])]
    seen.add(name)
    a, s, path = arrays[name], int(rec["start"]), root / "train" / name
    win = slice(s, s + window)
    assert rec["frames"].shape == (window, size, size, 3)
    assert rec["frames"].dtype == np.float32 and rec["skipped"] == 0
    native = media.read_native_frames(path, range(int(a["num_frames"])))
    want = np.stack([independent_crop(f, BOX, size) for f in native])
    np.testing.assert_allclose(rec["frames"], want[win], atol=1e-6)
    assert np.all(rec["frames"][:, :2] == 0)   # the box starts 8 px above
    # The source is one of the clip's frames, cropped alike.
    assert np.abs(want - rec["source"][None]).reshape(len(want), -1
                                                      ).max(1).min() < 1e-6
    np.testing.assert_array_equal(
        rec["a2h_audio"],
        speech_features.frame_blocks(a["a2h_features"], float(a["fps"]))[win])
    np.testing.assert_array_equal(
        rec["mel"], mel_lib.mel_chunks(a["mel"], float(a["fps"]))[win])
    np.testing.assert_array_equal(rec["pose"][:, 0], np.arange(s, s + window))
    for key in ("pose", "face_found", "mesh", "kp_value", "kp_jacobian"):
      np.testing.assert_array_equal(rec[key], a[key][win], err_msg=key)
    assert rec["face_found"].dtype == bool
    np.testing.assert_array_equal(rec["crop_box"], BOX)
  assert seen == set(CLIPS)


def test_crop_independent_of_a_second_frame_and_uncropped_frames(av_data, tmp_path):
  root, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays)
  ds = av_windows.build_av_window_dataset(
      params(av_data, 256), prep, seed=4, window=3, crop=False, num_epochs=1,
      **ONE_HOST)
  rec = ds[0]
  name, s = CLIPS[int(rec["clip"])], int(rec["start"])
  np.testing.assert_allclose(   # x * (1/255) here, x / 255 in media
      rec["frames"], media.read_frames(root / "train" / name, range(s, s + 3)),
      atol=1e-6)
  assert "mesh" not in rec


def test_starts_keep_every_array_full(av_data, tmp_path):
  """Audio ends before the video (mel chunks: 71 of 75 frames here): the
  start leaves room for a whole window of every array; a clip with fewer
  usable frames than the window is bad."""
  _, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays)
  usable = {}
  for name, a in arrays.items():
    fps = float(a["fps"])
    usable[name] = min(int(a["num_frames"]),
                       len(speech_features.frame_blocks(a["a2h_features"], fps)),
                       len(mel_lib.mel_chunks(a["mel"], fps)))
  assert usable[CLIPS[0]] < int(arrays[CLIPS[0]]["num_frames"])
  ds = av_windows.build_av_window_dataset(
      params(av_data, 8), prep, seed=2, window=70, num_epochs=3, **ONE_HOST)
  for rec in records(ds):
    assert int(rec["start"]) + 70 <= usable[CLIPS[int(rec["clip"])]]
    assert rec["a2h_audio"].shape == (70, 4, 41)
    assert rec["mel"].shape == (70, 80, 16)
  # 72 frames: the grid clips have 75 video frames but 71 usable.
  ds = av_windows.build_av_window_dataset(
      params(av_data, 8), prep, seed=2, window=72, num_epochs=1, **ONE_HOST)
  with pytest.raises(DataError, match="71 usable frames"):
    records(ds)
  ds = av_windows.build_av_window_dataset(
      params(av_data, 8), prep, seed=2, window=72, num_epochs=1,
      skip_bad=True, **ONE_HOST)
  got = records(ds)
  assert {int(r["clip"]) for r in got} == {2}
  assert sum(int(r["skipped"]) for r in got) >= 2


def test_batches_and_exact_resume(av_data, tmp_path):
  _, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays)

  def make():
    return av_windows.make_av_window_dataset(
        params(av_data, 32), prep, seed=1, batch_size=2, window=4, **ONE_HOST)

  it = iter(make())
  batch = next(it)
  shapes = {k: v.shape for k, v in batch.items()}
  assert shapes == {
      "frames": (2, 4, 32, 32, 3), "source": (2, 32, 32, 3),
      "a2h_audio": (2, 4, 4, 41), "mel": (2, 4, 80, 16), "pose": (2, 4, 6),
      "face_found": (2, 4), "kp_value": (2, 4, NUM_KP, 2),
      "kp_jacobian": (2, 4, NUM_KP, 2, 2), "crop_box": (2, 3), "start": (2,),
      "clip": (2,), "skipped": (2,)}
  next(it)
  state = it.get_state()
  want = next(it)
  resumed = iter(make())
  resumed.set_state(state)
  got = next(resumed)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_hosts_get_disjoint_clips(av_data, tmp_path):
  _, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays)
  seen = []
  for host in (0, 1):
    ds = av_windows.build_av_window_dataset(
        params(av_data, 8), prep, seed=0, window=2, num_epochs=1,
        process_index=host, process_count=2)
    seen.append({int(r["clip"]) for r in records(ds)})
  assert seen[0].isdisjoint(seen[1])
  assert seen[0] | seen[1] == {0, 1, 2}


def test_arrays_are_loaded_once_per_clip_and_the_dataset_pickles(
    av_data, tmp_path, monkeypatch):
  _, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays)
  ds = av_windows.build_av_window_dataset(
      params(av_data, 8), prep, seed=0, window=2, num_epochs=3, **ONE_HOST)
  first = ds[0]
  again = pickle.loads(pickle.dumps(ds))[0]   # as Grain workers get it
  for key in first:
    np.testing.assert_array_equal(again[key], first[key], err_msg=key)
  loads = []
  real = np.load
  monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
  assert len(records(ds)) == 9
  # Each clip's file read at most once (ds[0]'s clip not even once more).
  assert len(loads) == len(set(loads)) <= 2


def test_missing_prepared_file(av_data, tmp_path, caplog):
  _, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays, drop=(CLIPS[1],))
  missing = str(prep / "train" / f"{CLIPS[1]}.npz")
  with pytest.raises(DataError, match=re.escape(missing)) as e:
    av_windows.build_av_window_dataset(params(av_data), prep, seed=0,
                                       window=2, **ONE_HOST)
  assert "dagan-jax data prepare" in str(e.value)
  ds = av_windows.build_av_window_dataset(
      params(av_data), prep, seed=0, window=2, num_epochs=1, skip_bad=True,
      **ONE_HOST)
  assert "skipping 1 clip(s) without prepared arrays" in caplog.text
  got = records(ds)
  assert len(got) == 2 and all(r["skipped"] == 0 for r in got)
  split = av_windows.open_av_split(params(av_data), prep, window=2,
                                   skip_bad=True)
  assert [c.name for c in split.clips] == [CLIPS[0], CLIPS[2]]
  assert [b.path for b in split.excluded] == [missing]


def test_manifest_is_checked(av_data, tmp_path):
  _, _, arrays = av_data
  prep = prepare(tmp_path / "prep", arrays, fmt=2)
  with pytest.raises(DataError, match="format 2.*dagan-jax data prepare"):
    av_windows.build_av_window_dataset(params(av_data), prep, seed=0,
                                       window=2, **ONE_HOST)
  (prep / "manifest.json").unlink()
  with pytest.raises(DataError, match=re.escape(str(prep / "manifest.json"))):
    av_windows.build_av_window_dataset(params(av_data), prep, seed=0,
                                       window=2, **ONE_HOST)


def test_stale_and_inconsistent_files(av_data, tmp_path):
  root, _, arrays = av_data
  n0 = int(arrays[CLIPS[0]]["num_frames"])
  prep = prepare(tmp_path / "stale", arrays,
                 changes={CLIPS[0]: {"num_frames": np.int64(n0 + 5)}})
  ds = av_windows.build_av_window_dataset(params(av_data), prep, seed=0,
                                          window=2, num_epochs=1, **ONE_HOST)
  with pytest.raises(DataError) as e:
    records(ds)
  msg = str(e.value)
  assert str(prep / "train" / f"{CLIPS[0]}.npz") in msg
  assert str(root / "train" / CLIPS[0]) in msg
  assert f"{n0 + 5} frames" in msg and f"has {n0} now" in msg
  ds = av_windows.build_av_window_dataset(
      params(av_data), prep, seed=0, window=2, num_epochs=2, skip_bad=True,
      **ONE_HOST)
  got = records(ds)
  assert 0 not in {int(r["clip"]) for r in got}
  assert sum(int(r["skipped"]) for r in got) >= 2
  # Keypoints in some files only: the split disagrees with itself.
  prep = prepare(tmp_path / "kp", arrays, without_kp=(CLIPS[2],))
  ds = av_windows.build_av_window_dataset(params(av_data), prep, seed=0,
                                          window=2, num_epochs=1, **ONE_HOST)
  with pytest.raises(DataError, match="lacks kp_value/kp_jacobian"):
    records(ds)


def test_module_imports_no_model_code():
  """Grain workers unpickle the sampler: importing its module must not pull
  in the networks (flax, dagan_jax.models, ...). Grain itself imports jax,
  so the check is on what this package adds."""
  code = ("import sys, dagan_jax.input.av_windows\n"
          "extra = sorted(m for m in sys.modules if m == 'flax' or "
          "m.startswith('dagan_jax.') and m.split('.')[1] not in "
          "('input', 'audio', 'face', 'errors'))\n"
          "assert not extra, extra\n")
  subprocess.run([sys.executable, "-c", code], check=True)
