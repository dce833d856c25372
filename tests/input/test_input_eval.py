"""Evaluation inputs: FOMM reconstruction clips and DaGAN pair lists."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from dagan_jax.errors import DataError
from dagan_jax.input import media, pipeline
from dagan_jax.input.pairs import (PairRow, read_pair_frames, read_pairs_csv,
                                   resolve_frame, write_pairs_csv)

FOLDER = "id10009#iplap_129#000000#000100.mp4"   # test clip stored as frames
VIDEO = "id10010#lshug_driving#000000#000100.mp4"  # test clip stored as mp4


def test_reconstruction_videos_are_lazy_and_complete(vox_root, tmp_path):
  got = list(pipeline.reconstruction_videos(vox_root, "test", cache_dir=tmp_path))
  assert [name for name, _ in got] == [FOLDER, VIDEO]
  folder, video = got[0][1], got[1][1]
  assert (len(folder), folder.fps, folder.frame_hw) == (100, None, (256, 256))
  assert (len(video), video.fps) == (100, 25.0)
  frames = list(video)  # Streamed one at a time.
  assert len(frames) == 100 and frames[0].shape == (256, 256, 3)
  np.testing.assert_array_equal(video.read([0, 99]), np.stack([frames[0], frames[99]]))
  first = folder.read([0])[0]
  np.testing.assert_array_equal(first, next(iter(folder)))
  assert len(list(pipeline.reconstruction_videos(vox_root, "test", cache_dir=tmp_path,
                                                 limit=1))) == 1


def test_reconstruction_names_unreadable_clips(tmp_path, vox_root):
  import shutil
  shutil.copytree(vox_root / "test", tmp_path / "d" / "test")
  (tmp_path / "d" / "test" / "id9#x#0#1.mp4").write_bytes(b"nope")
  with pytest.raises(DataError, match=r"id9#x#0#1\.mp4"):
    list(pipeline.reconstruction_videos(tmp_path / "d", cache_dir=tmp_path))
  names = [n for n, _ in pipeline.reconstruction_videos(
      tmp_path / "d", cache_dir=tmp_path, skip_bad=True)]
  assert names == [FOLDER, VIDEO]


def dagan_style_csv(path, rows, header=("source", "driving", "frame")):
  """Writes a file as DaGAN's data/vox_evaluation.csv is written: a
  three-column header and two-field rows."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def test_dagan_csv_same_and_cross_identity(vox_root, tmp_path):
  base = "/data/fhongac/origDataset/vox1_frames/test"
  same = tmp_path / "vox_evaluation.csv"
  dagan_style_csv(same, [(f"{base}/{FOLDER}/0000013.png", f"{base}/{FOLDER}/0000048.png")])
  cross = tmp_path / "vox_cross_id_evaluation.csv"
  dagan_style_csv(cross, [(f"{base}/{FOLDER}/0000075.png", f"{base}/{VIDEO}/0000034.png")])
  rows = read_pairs_csv(same)
  assert rows == [PairRow(f"{base}/{FOLDER}/0000013.png",
                          f"{base}/{FOLDER}/0000048.png", {"frame": ""})]
  ref = resolve_frame(rows[0].source, vox_root)
  assert ref.frame_file == str(vox_root / "test" / FOLDER / "0000013.png")
  src, drv = read_pair_frames(rows[0], vox_root)
  np.testing.assert_array_equal(src, media.read_image(ref.frame_file))
  assert drv.shape == (256, 256, 3)

  (row,) = read_pairs_csv(cross)
  ref = resolve_frame(row.driving, vox_root)
  assert (ref.clip_path, ref.frame_index, ref.frame_file) == (
      str(vox_root / "test" / VIDEO), 34, None)
  _, drv = read_pair_frames(row, vox_root)
  np.testing.assert_array_equal(drv, media.read_frames(vox_root / "test" / VIDEO, [34])[0])


def test_other_dagan_csv_variants(vox_root, tmp_path):
  clips_csv = tmp_path / "vox256.csv"
  dagan_style_csv(clips_csv, [(FOLDER, VIDEO, "0.0")])
  (row,) = read_pairs_csv(clips_csv)
  assert row.extra == {"frame": "0.0"}
  assert resolve_frame(row.source, vox_root).frame_index is None
  src, _ = read_pair_frames(row, vox_root)
  np.testing.assert_array_equal(src, media.read_frames(vox_root / "test" / FOLDER, [0])[0])

  animate = tmp_path / "animate.csv"
  dagan_style_csv(animate, [(f"x/test/{FOLDER}/0000001.png", f"/elsewhere/test/{VIDEO}")],
                  header=("source_frame", "driving_video"))
  (row,) = read_pairs_csv(animate)
  assert row.driving.endswith(VIDEO) and row.extra == {}
  assert resolve_frame(row.driving, vox_root).clip_path == str(vox_root / "test" / VIDEO)


def test_write_read_round_trip(tmp_path):
  path = tmp_path / "out" / "pairs.csv"
  write_pairs_csv(path, [("a/0000001.png", "b/0000002.png"),
                         ("c/0000003.png", "d/0000004.png")])
  text = path.read_text().splitlines()
  assert text[0] == "source,driving,frame"
  assert text[1] == "a/0000001.png,b/0000002.png,"
  assert [(r.source, r.driving) for r in read_pairs_csv(path)] == [
      ("a/0000001.png", "b/0000002.png"), ("c/0000003.png", "d/0000004.png")]
  rows = [PairRow("s", "d", {"best_frame": "b"}), {"source": "s2", "driving": "d2"}]
  write_pairs_csv(path, rows)
  back = read_pairs_csv(path)
  assert back[0] == rows[0] and back[1] == PairRow("s2", "d2", {"best_frame": ""})


def test_bad_pair_lists_name_the_file_and_line(tmp_path, vox_root):
  p = tmp_path / "bad.csv"
  p.write_text("source,target\na,b\n")
  with pytest.raises(DataError, match="bad.csv: header"):
    read_pairs_csv(p)
  p.write_text("source,driving\na,b\nc,d,e\n")
  with pytest.raises(DataError, match="bad.csv line 3: 3 fields"):
    read_pairs_csv(p)
  p.write_text("source,driving\n,b\n")
  with pytest.raises(DataError, match="line 2: empty source"):
    read_pairs_csv(p)
  with pytest.raises(DataError, match="cannot read pair list"):
    read_pairs_csv(tmp_path / "missing.csv")
  with pytest.raises(DataError, match="clip 'id1#nope.mp4' not found"):
    resolve_frame("/x/test/id1#nope.mp4/0000001.png", vox_root)
