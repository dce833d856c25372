"""The 'lrs2' layout: clips main/<id>/<n>.mp4 named by filelists/<split>.txt.

The tree is built from real talking-face clips (``av_mini``, 256x256 mp4s
with AAC sound, as LRS2's are apart from their 160x160 size), linked into
LRS2's folder structure.
"""

from __future__ import annotations

import pathlib

import pytest

from dagan_jax import cli
from dagan_jax.errors import DataError
from dagan_jax.input import clips, media, pipeline

# LRS2 ids are long digit strings (one BBC programme each).
ID_A = "5535415699068794046"
ID_B = "6330311066473698535"
NAMES = [f"{ID_A}/00001.mp4", f"{ID_A}/00002.mp4",
         f"{ID_B}/00001.mp4", f"{ID_B}/00002.mp4"]


@pytest.fixture
def lrs2_tree(shared_dir, tmp_path) -> tuple[pathlib.Path, dict[str, pathlib.Path]]:
  """An LRS2 root of 2 ids x 2 clips (links to av_mini's short GRID clips);
  returns it and the real file behind each clip name."""
  sources = sorted((shared_dir / "data" / "av_mini" / "train").glob("grid_*.mp4"))[:4]
  assert len(sources) == 4
  root = tmp_path / "lrs2"
  behind = {}
  for name, src in zip(NAMES, sources):
    dst = root / "main" / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    behind[name] = src
  lists = root / "filelists"
  lists.mkdir()
  (lists / "train.txt").write_text(
      "".join(f"{n[:-4]}\n" for n in NAMES))
  (lists / "val.txt").write_text(f"{ID_A}/00002\n")
  # test.txt as LRS2 ships it: a tag after each clip; and a blank line.
  (lists / "test.txt").write_text(f"{ID_B}/00001 NF\n\n{ID_B}/00002 MV\n")
  return root, behind


def test_scan_split_reads_the_filelist(lrs2_tree, tmp_path):
  root, behind = lrs2_tree
  index = clips.scan_split(root, "train", "lrs2", cache_dir=tmp_path / "c")
  assert index.bad == []
  assert [c.name for c in index.clips] == NAMES
  assert [c.person for c in index.clips] == [ID_A, ID_A, ID_B, ID_B]
  assert index.split_dir == root / "main"
  for i, c in enumerate(index.clips):
    assert index.path(i) == str(root / "main" / c.name)
    n, fps, hw = media.probe_video(behind[c.name])
    assert (c.kind, c.num_frames, c.fps, (c.height, c.width), c.mode) == (
        "video", n, fps, hw, "RGB")
  assert index.stats["filelist"] == str(root / "filelists" / "train.txt")
  assert clips.person_of(NAMES[2], "lrs2") == ID_B
  assert clips.DEFAULT_FRAME_SHAPE["lrs2"] == (160, 160, 3)

  # Tags after the clip and blank lines are ignored.
  test = clips.scan_split(root, "test", "lrs2", cache_dir=tmp_path / "c")
  assert [c.name for c in test.clips] == NAMES[2:] and test.bad == []
  val = clips.scan_split(root, "val", "lrs2", cache_dir=tmp_path / "c")
  assert [c.name for c in val.clips] == [NAMES[1]]

  # Second start: everything from the cache, one file per filelist, and a
  # 'vox' scan of the same clip folder gets a file of its own.
  again = clips.scan_split(root, "train", "lrs2", cache_dir=tmp_path / "c")
  assert (again.stats["cached"], again.stats["probed"]) == (4, 0)
  assert again.clips == index.clips
  clips.scan_split(root, "main", "vox", cache_dir=tmp_path / "c")
  assert len(list((tmp_path / "c").iterdir())) == 4
  assert clips.scan_split(root, "train", "lrs2",
                          cache_dir=tmp_path / "c").stats["probed"] == 0


def test_pretrain_reads_its_own_folder(lrs2_tree, tmp_path):
  root, behind = lrs2_tree
  dst = root / "pretrain" / ID_A / "00007.mp4"
  dst.parent.mkdir(parents=True)
  dst.symlink_to(behind[NAMES[0]])
  (root / "filelists" / "pretrain.txt").write_text(f"{ID_A}/00007\n")
  index = clips.scan_split(root, "pretrain", "lrs2", cache_dir=tmp_path / "c")
  assert index.split_dir == root / "pretrain"
  assert [(c.name, c.person) for c in index.clips] == [(f"{ID_A}/00007.mp4", ID_A)]


def test_missing_clip_is_bad_with_its_filelist_line(lrs2_tree, tmp_path):
  root, _ = lrs2_tree
  with open(root / "filelists" / "train.txt", "a") as f:
    f.write(f"{ID_B}/00009\n")
  index = clips.scan_split(root, "train", "lrs2", cache_dir=tmp_path / "c")
  assert [c.name for c in index.clips] == NAMES
  [bad] = index.bad
  assert bad.path == str(root / "main" / ID_B / "00009.mp4")
  assert "line 5" in bad.reason and "train.txt" in bad.reason


def test_missing_filelist_or_clip_folder_is_a_data_error(lrs2_tree, tmp_path):
  root, _ = lrs2_tree
  (root / "filelists" / "val.txt").unlink()
  with pytest.raises(DataError) as e:
    clips.scan_split(root, "val", "lrs2", cache_dir=tmp_path / "c")
  msg = str(e.value)
  assert str(root / "filelists" / "val.txt") in msg
  assert "test.txt" in msg and "train.txt" in msg  # what filelists/ holds
  with pytest.raises(DataError, match="pretrain"):
    clips.scan_split(root, "pretrain", "lrs2", cache_dir=tmp_path / "c")


def test_open_split_and_read_a_frame(lrs2_tree, tmp_path):
  root, _ = lrs2_tree
  params = pipeline.dataset_params_for(root, "lrs2", frame_shape=[256, 256, 3],
                                       cache_dir=str(tmp_path / "c"))
  data = pipeline.open_split(params, "train")
  assert [c.name for c in data.clips] == NAMES
  [frame] = data.reader.read(3, [data.clips[3].num_frames - 1])
  assert frame.shape == (256, 256, 3)
  # LRS2's own size is the default: these 256x256 clips do not fit it.
  with pytest.raises(DataError, match="frames are 256x256"):
    pipeline.open_split(pipeline.dataset_params_for(
        root, "lrs2", cache_dir=str(tmp_path / "c")), "train")


def test_cli_check_with_audio(lrs2_tree, tmp_path, capsys):
  root, _ = lrs2_tree
  argv = ["data", "check", "--root", str(root), "--layout", "lrs2", "--audio",
          "--frame-shape", "256", "256", "--num-sample-frames", "2",
          "--cache-dir", str(tmp_path / "c")]
  rc = cli.main(argv)
  out = capsys.readouterr().out
  assert rc == 0, out
  assert "train: 4 clips, 2 persons" in out
  assert "val: 1 clips, 1 persons" in out and "test: 2 clips, 1 persons" in out
  assert "OK: no bad files" in out

  with open(root / "filelists" / "val.txt", "a") as f:
    f.write(f"{ID_A}/00003\n")
  rc = cli.main(argv)
  out = capsys.readouterr().out
  assert rc == 1, out
  assert str(root / "main" / ID_A / "00003.mp4") in out
  assert "line 2 of" in out and "FAILED: 1 bad file(s)" in out
