"""clips.py: layouts, persons, the cached clip index."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from dagan_jax.errors import DataError
from dagan_jax.input import benchmark, clips
from input_helpers import VOX_FILE_CLIP, VOX_FOLDER_CLIP, make_folder_clip


def test_vox_layout_files_and_folders(vox_root, tmp_path):
  index = clips.scan_split(vox_root, "train", "vox", cache_dir=tmp_path)
  assert index.bad == []
  assert len(index.clips) == 12 and len(index.persons) == 8
  names = [c.name for c in index.clips]
  assert names == sorted(names)
  by_name = {c.name: c for c in index.clips}
  assert by_name[VOX_FOLDER_CLIP].kind == "folder"
  assert by_name[VOX_FILE_CLIP].kind == "video"
  assert by_name[VOX_FOLDER_CLIP].person == "id10003"
  assert by_name["id10002#lp_d0#000000#000078.mp4"].num_frames == 78
  assert all((c.height, c.width, c.mode) == (256, 256, "RGB") for c in index.clips)
  assert index.num_frames == 1398
  groups = clips.group_clips(index.clips, id_sampling=True)
  assert len(groups) == 8 and sorted(sum(groups, [])) == list(range(12))
  assert {index.clips[i].person for i in groups[2]} == {"id10003"}
  assert len(groups[2]) == 2
  assert clips.group_clips(index.clips, id_sampling=False) == [[i] for i in range(12)]


def test_hdtf_layout(hdtf_root, tmp_path):
  index = clips.scan_split(hdtf_root, "train", "hdtf", cache_dir=tmp_path)
  assert [(c.person, c.kind, c.num_frames, c.height) for c in index.clips] == [
      ("WDA_PersonB", "folder", 48, 512), ("WRA_PersonA", "folder", 48, 512)]
  assert clips.person_of("WDA_BarackObama_000.mp4", "hdtf") == "WDA_BarackObama"
  assert clips.person_of("id10001#abc#000000#000100.mp4", "vox") == "id10001"


def test_cache_reuses_and_reprobes_changed_clips(tmp_path):
  root = tmp_path / "data"
  for p in range(3):
    make_folder_clip(root / "train" / f"id{p}#v#0#3.mp4", [10, 20, 30])
  cache = tmp_path / "cache"
  first = clips.scan_split(root, "train", "vox", cache_dir=cache)
  assert (first.stats["probed"], first.stats["cached"]) == (3, 0)
  files = list(cache.iterdir())
  assert len(files) == 1
  assert json.loads(files[0].read_text())["split_dir"] == str((root / "train").resolve())

  again = clips.scan_split(root, "train", "vox", cache_dir=cache)
  assert (again.stats["probed"], again.stats["cached"]) == (0, 3)
  assert again.clips == first.clips

  # A frame added to one clip changes its folder's mtime: re-probed.
  changed = root / "train" / "id1#v#0#3.mp4"
  make_folder_clip(changed, [10, 20, 30, 40])
  st = os.stat(changed)
  os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  shutil.rmtree(root / "train" / "id2#v#0#3.mp4")
  third = clips.scan_split(root, "train", "vox", cache_dir=cache)
  assert (third.stats["probed"], third.stats["cached"]) == (1, 1)
  assert [c.num_frames for c in third.clips] == [3, 4]

  fresh = clips.scan_split(root, "train", "vox", cache_dir=cache, use_cache=False)
  assert fresh.stats["probed"] == 2 and fresh.clips == third.clips


def test_unwritable_cache_only_costs_speed(tmp_path, caplog):
  root = tmp_path / "data"
  make_folder_clip(root / "train" / "id0#v#0#3.mp4", [1, 2, 3])
  blocker = tmp_path / "file"
  blocker.write_text("a file where the cache folder should go")
  index = clips.scan_split(root, "train", "vox", cache_dir=blocker / "sub")
  assert len(index.clips) == 1
  assert "cannot write the clip index" in caplog.text


def test_missing_and_empty_split_folders(tmp_path):
  (tmp_path / "train").mkdir()
  with pytest.raises(DataError, match=r"train is empty"):
    clips.scan_split(tmp_path, "train", cache_dir=tmp_path / "c")
  with pytest.raises(DataError, match=r"split folder .*test not found"):
    clips.scan_split(tmp_path, "test", cache_dir=tmp_path / "c")
  with pytest.raises(DataError, match="does not exist"):
    clips.scan_split(tmp_path / "nope", "train", cache_dir=tmp_path / "c")


def test_cached_start_up_over_many_clips(tmp_path):
  """The 100k-clip measurement lives in the benchmark; here 5k clips."""
  res = benchmark.measure_index_startup(5000, folder=tmp_path, repeats=1)
  assert res["num_clips"] == 5000 and res["persons"] == 250
  # Generous bound for a loaded 2-core machine (about 0.1 s when idle).
  assert res["scan_s"] < 3.0 and res["make_dataset_s"] < 5.0
