"""Bad input: every case is an error naming the file, or skipped and counted."""

from __future__ import annotations

import logging
import shutil

import av
import cv2
import numpy as np
import pytest

from dagan_jax.errors import DataError
from dagan_jax.input import media, pipeline
from input_helpers import NO_AUG, make_folder_clip, params_for

ONE_HOST = {"process_index": 0, "process_count": 1}
SHAPE = [16, 16, 3]


def pairs(params, *, skip_bad=False, batch_size=8, n=4, id_sampling=False):
  params = dict(params, id_sampling=id_sampling)
  it = iter(pipeline.make_pair_dataset(params, seed=0, batch_size=batch_size,
                                       num_repeats=4, skip_bad=skip_bad,
                                       **ONE_HOST))
  return [next(it) for _ in range(n)]


@pytest.fixture
def root(tmp_path):
  """Two good 16x16 clips; tests add bad ones."""
  r = tmp_path / "data"
  make_folder_clip(r / "train" / "id0#good#0#4.mp4", [10, 11, 12, 13])
  make_folder_clip(r / "train" / "id1#good#0#4.mp4", [50, 51, 52, 53])
  return r


def params(root, tmp_path, **kw):
  return params_for(root, tmp_path / "cache", frame_shape=SHAPE,
                    augmentation_params=NO_AUG, **kw)


def write_truncated_mp4(path, n=60, keep=0.4):
  """An mp4 whose header (moov first) promises ``n`` frames but whose data
  stops after about ``keep`` of them."""
  frames = (np.random.default_rng(0).random((n, 16, 16, 3)) * 255).astype(np.uint8)
  with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
    s = c.add_stream("libx264", rate=25)
    s.width = s.height = 16
    s.pix_fmt = "yuv420p"
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])


def test_corrupt_video_named_at_start_or_skipped(root, tmp_path, caplog):
  bad = root / "train" / "id2#corrupt#0#9.mp4"
  bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
  with pytest.raises(DataError, match=r"(?s)1 bad clip.*id2#corrupt#0#9\.mp4: cannot open video"):
    pairs(params(root, tmp_path))
  with caplog.at_level(logging.WARNING, logger="dagan_jax.input"):
    batches = pairs(params(root, tmp_path), skip_bad=True)
  assert "id2#corrupt#0#9.mp4" in caplog.text
  data = pipeline.open_split(params(root, tmp_path), skip_bad=True)
  assert [b.path for b in data.excluded] == [str(bad)]
  assert len(data.clips) == 2
  assert all(b["skipped"].sum() == 0 for b in batches)


def test_truncated_video_fails_mid_run_naming_the_file(root, tmp_path, caplog):
  trunc = root / "train" / "id2#trunc#0#60.mp4"
  write_truncated_mp4(trunc)
  n, _, _ = media.probe_video(trunc)
  assert n == 60  # The header does not tell.
  with pytest.raises(DataError, match=r"id2#trunc#0#60\.mp4.*frame"):
    pairs(params(root, tmp_path), n=6)
  with caplog.at_level(logging.WARNING, logger="dagan_jax.input"):
    batches = pairs(params(root, tmp_path), skip_bad=True, n=6)
  skipped = sum(int(b["skipped"].sum()) for b in batches)
  assert skipped > 0
  assert "skipping bad clip" in caplog.text and "id2#trunc" in caplog.text
  for b in batches:  # Only good clips' frames came through.
    v = np.round(b["source"][:, 0, 0, 0] * 255)
    assert set(v) <= {10, 11, 12, 13, 50, 51, 52, 53}


def test_clip_with_too_few_frames(root, tmp_path):
  make_folder_clip(root / "train" / "id2#short#0#2.mp4", [90, 91])
  pairs(params(root, tmp_path), n=1)  # Two frames make a pair.
  with pytest.raises(DataError, match=r"id2#short#0#2\.mp4: has 2 frames; a record needs at least 3"):
    pipeline.make_depth_dataset(params(root, tmp_path), seed=0, batch_size=2,
                                num_repeats=1, **ONE_HOST)
  make_folder_clip(root / "train" / "id3#one#0#1.mp4", [95])
  with pytest.raises(DataError, match=r"id3#one#0#1\.mp4: has 1 frame; a record needs at least 2"):
    pairs(params(root, tmp_path))


def test_clip_of_the_wrong_size(root, tmp_path):
  make_folder_clip(root / "train" / "id2#big#0#3.mp4", [1, 2, 3], size=(32, 32))
  with pytest.raises(DataError, match=r"id2#big#0#3\.mp4: frames are 32x32; "
                     r"dataset_params.frame_shape asks for 16x16"):
    pairs(params(root, tmp_path))
  batches = pairs(params(root, tmp_path, resize_frames=True), n=2)
  assert batches[0]["source"].shape == (8, 16, 16, 3)


def test_one_wrong_sized_frame_inside_a_folder(root, tmp_path):
  clip = make_folder_clip(root / "train" / "id2#odd#0#2.mp4", [30, 31])
  cv2.imwrite(str(clip / "0000001.png"), np.zeros((8, 16, 3), np.uint8))
  shutil.rmtree(root / "train" / "id1#good#0#4.mp4")
  with pytest.raises(DataError, match=r"id2#odd#0#2\.mp4/0000001\.png: frame "
                     r"is 8x16; dataset_params.frame_shape asks for 16x16"):
    pairs(params(root, tmp_path), n=4)
  batches = pairs(params(root, tmp_path), skip_bad=True, n=4)
  assert sum(int(b["skipped"].sum()) for b in batches) > 0
  for b in batches:
    assert b["driving"].shape == (8, 16, 16, 3)
    assert set(np.round(b["driving"][:, 0, 0, 0] * 255)) <= {10, 11, 12, 13, 30}


def test_wrong_channel_counts(root, tmp_path):
  grey = root / "train" / "id2#grey#0#2.mp4"
  grey.mkdir()
  for i in range(2):
    cv2.imwrite(str(grey / f"{i:07d}.png"), np.full((16, 16), 40, np.uint8))
  with pytest.raises(DataError, match=r"id2#grey#0#2\.mp4: frames are greyscale \(1 channel\)"):
    pairs(params(root, tmp_path))
  shutil.rmtree(grey)
  rgba = make_folder_clip(root / "train" / "id2#rgba#0#2.mp4", [60, 61])
  cv2.imwrite(str(rgba / "0000001.png"), np.full((16, 16, 4), 61, np.uint8))
  shutil.rmtree(root / "train" / "id1#good#0#4.mp4")
  with pytest.raises(DataError, match=r"id2#rgba#0#2\.mp4/0000001\.png: 4 channels; expected 3"):
    pairs(params(root, tmp_path), n=4)
  deep = make_folder_clip(root / "train" / "id3#deep#0#2.mp4", [70, 71])
  cv2.imwrite(str(deep / "0000001.png"), np.full((16, 16, 3), 7000, np.uint16))
  (rgba / "0000001.png").unlink()
  shutil.rmtree(rgba)
  with pytest.raises(DataError, match=r"id3#deep#0#2\.mp4/0000001\.png: 16-bit pixels"):
    pairs(params(root, tmp_path), n=4)


def test_empty_or_missing_split_folder(tmp_path):
  (tmp_path / "data" / "train").mkdir(parents=True)
  with pytest.raises(DataError, match=r"data/train is empty"):
    pairs(params(tmp_path / "data", tmp_path))
  with pytest.raises(DataError, match=r"data/test not found"):
    pipeline.make_pair_dataset(params(tmp_path / "data", tmp_path), split="test",
                               seed=0, batch_size=1, num_repeats=1, **ONE_HOST)


def test_stray_file_and_unreadable_frame_folder(root, tmp_path):
  (root / "train" / "notes.txt").write_text("not a clip")
  (root / "train" / "id4#nothing#0#0.mp4").mkdir()
  with pytest.raises(DataError) as e:
    pairs(params(root, tmp_path))
  assert "2 bad clip" in str(e.value)
  assert "notes.txt: unknown clip type '.txt'" in str(e.value)
  assert "id4#nothing#0#0.mp4: frame folder holds no image files" in str(e.value)


def test_unreadable_headers_leave_no_usable_clips(tmp_path):
  r = tmp_path / "data"
  for k in range(3):
    clip = make_folder_clip(r / "train" / f"id{k}#bad#0#2.mp4", [1, 2])
    (clip / "0000000.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
  with pytest.raises(DataError, match="no usable clips"):
    pairs(params(r, tmp_path), skip_bad=True)


def test_too_many_bad_clips_in_a_row_gives_up_with_the_name(tmp_path):
  r = tmp_path / "data"
  for k in range(3):  # Frame 0 is fine (so is the header); 1 and 2 are not.
    clip = make_folder_clip(r / "train" / f"id{k}#bad#0#3.mp4", [1, 2, 3])
    for i in (1, 2):
      (clip / f"{i:07d}.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
  ds = pipeline.build_record_dataset(params(r, tmp_path), seed=0,
                                     num_repeats=10, skip_bad=True,
                                     max_skips=2, **ONE_HOST)
  errors, skipped = [], []
  for i in range(30):
    try:
      skipped.append(int(ds[i]["skipped"]))
    except DataError as e:
      errors.append(str(e))
  assert errors and max(skipped) <= 2
  assert "3 bad clips in a row" in errors[0]
  assert "#bad#0#3.mp4/000000" in errors[0] and "cannot decode" in errors[0]
