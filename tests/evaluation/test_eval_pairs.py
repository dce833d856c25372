"""DaGAN CSV pair lists: reading, path resolution, and the shipped vox_mini lists."""

import csv
import os
import pathlib

import pytest

from dagan_jax.errors import DataError
from dagan_jax.evaluation import pairs as P

REPO = pathlib.Path(__file__).resolve().parents[2]

# Two rows in the exact layout of DaGAN's data/vox_evaluation.csv (header with a
# 'frame' column, rows of two absolute frame paths).
_DAGAN_ROWS = (
    "source,driving,frame\n"
    "/data/x/vox1_frames/test/id10282#Zbz#004557#004656.mp4/0000013.png,"
    "/data/x/vox1_frames/test/id10282#Zbz#004557#004656.mp4/0000048.png\n"
    "/data/x/vox1_frames/test/id10292#ENI#011570#011689.mp4/0000082.png,"
    "/data/x/vox1_frames/test/id10290#gTb#001173#001330.mp4/0000034.png\n")


def test_reads_dagan_format_and_reroots_absolute_paths(tmp_path):
  csv_path = tmp_path / "vox_evaluation.csv"
  csv_path.write_text(_DAGAN_ROWS)
  pairs = P.read_pair_list(csv_path)
  assert [(p.source.frame, p.driving.frame) for p in pairs] == [(13, 48), (82, 34)]
  assert pairs[0].source.video == "/data/x/vox1_frames/test/id10282#Zbz#004557#004656.mp4"
  assert P.person_id(pairs[1].source.video) == "id10292"
  assert P.person_id(pairs[1].driving.video) == "id10290"
  # The authors' absolute paths are re-rooted under a local data root.
  video = tmp_path / "root" / "test" / "id10282#Zbz#004557#004656.mp4"
  video.mkdir(parents=True)
  assert P.resolve_video(tmp_path / "root", pairs[0].source.video) == str(video)
  with pytest.raises(DataError, match="not found"):
    P.resolve_video(tmp_path / "root", pairs[1].source.video)


def test_other_headers_whole_videos_and_frame_column(tmp_path):
  f = tmp_path / "animate.csv"
  f.write_text("source_frame,driving_video\n"
               "test/a#v#0#9.mp4/0000003.png,test/b#w#0#9.mp4\n")
  (pair,) = P.read_pair_list(f)
  assert pair.source == P.FrameRef("test/a#v#0#9.mp4", 3)
  assert pair.driving == P.FrameRef("test/b#w#0#9.mp4", None)
  g = tmp_path / "fomm.csv"
  g.write_text("source,driving,frame\nid1#a.mp4,id2#b.mp4,4.0\n")
  (pair,) = P.read_pair_list(g)
  assert pair.source == P.FrameRef("id1#a.mp4", 4) and pair.driving.frame is None


def test_bad_pair_lists_raise_named_errors(tmp_path):
  with pytest.raises(DataError, match="pair list not found: .*missing.csv"):
    P.read_pair_list(tmp_path / "missing.csv")
  bad = tmp_path / "bad.csv"
  bad.write_text("a,b\nx,y\n")
  with pytest.raises(DataError, match=r"bad.csv: header \['a', 'b'\] needs a source column"):
    P.read_pair_list(bad)
  bad.write_text("source,driving,frame\nx.png,\n")
  with pytest.raises(DataError, match=r"bad.csv line 2: empty source or driving"):
    P.read_pair_list(bad)
  bad.write_text("source,driving,frame\n")
  with pytest.raises(DataError, match="has no rows"):
    P.read_pair_list(bad)
  bad.write_text("source,driving,frame\nid1#a.mp4,id2#b.mp4,four\n")
  with pytest.raises(DataError, match=r"bad.csv, row 1: frame 'four' is not a number"):
    P.read_pair_list(bad)
  bad.write_text("source,driving,frame\na.png,b.png,,extra\n")
  with pytest.raises(DataError, match=r"bad.csv line 2: 4 fields but the header has 3"):
    P.read_pair_list(bad)


@pytest.mark.parametrize("name, same", [("vox_mini_test_pairs.csv", True),
                                        ("vox_mini_test_cross_id_pairs.csv", False)])
def test_shipped_vox_mini_lists_are_valid(shared_dir, name, same):
  root = shared_dir / "data" / "vox_mini"
  path = REPO / "data" / name
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["source", "driving", "frame"]
  assert all(len(r) == 2 for r in rows[1:])  # DaGAN's two-field rows
  pairs = P.read_pair_list(path)
  assert len(pairs) == 16
  videos = set()
  for p in pairs:
    for ref in (p.source, p.driving):
      full = P.resolve_video(root, ref.video)
      assert 0 <= ref.frame < P.count_frames(full)
      videos.add(os.path.basename(full))
    assert (P.person_id(p.source.video) == P.person_id(p.driving.video)) == same
    if same:
      assert p.source.video == p.driving.video and p.source.frame != p.driving.frame
  # Both clips are used: the folder of frames and the mp4 file.
  assert videos == set(os.listdir(root / "test"))


def test_make_pair_lists_reproduces_the_shipped_files(shared_dir, tmp_path):
  written = P.make_pair_lists(shared_dir / "data" / "vox_mini", "test", tmp_path,
                              "vox_mini_test", pairs_per_video=8, seed=0)
  for path in written:
    assert pathlib.Path(path).read_text() == (REPO / "data" / os.path.basename(path)).read_text()
