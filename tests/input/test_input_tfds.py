"""TFDS builders end to end: build ArrayRecord without TensorFlow, read back
through the same Grain pipeline, decode only the frames a record uses."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from dagan_jax.errors import DataError
from dagan_jax.input import pipeline, tfds_builders
from input_helpers import make_folder_clip, params_for

ONE_HOST = {"process_index": 0, "process_count": 1}


@pytest.fixture(scope="module")
def vox_tfds(small_vox, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  path = tfds_builders.build_tfds(small_vox, "vox", data_dir,
                                  cache_dir=data_dir / "cache")
  return data_dir, path


def test_vox_build_writes_array_record_with_clip_table(vox_tfds, small_vox):
  assert "tensorflow" not in sys.modules
  data_dir, path = vox_tfds
  assert path == data_dir / "dagan_vox_frames" / "png" / "1.0.0"
  assert sorted(p.name for p in path.glob("*.array_record*")) == [
      "dagan_vox_frames-test.array_record-00000-of-00001",
      "dagan_vox_frames-train.array_record-00000-of-00001"]
  meta = json.loads((path / "metadata.json").read_text())
  table = meta["clips"]["train"]
  assert [r[0] for r in table] == sorted(p.name for p in (small_vox / "train").iterdir())
  assert [r[3] for r in table] == [78, 120, 120]
  assert [r[7] for r in table] == [0, 78, 198]  # Record offsets.
  assert meta["excluded"] == {"train": [], "test": []}


def test_tfds_pipeline_equals_the_file_pipeline(vox_tfds, small_vox, tmp_path):
  data_dir, _ = vox_tfds
  files = params_for(small_vox, tmp_path)
  tfds_params = dict(files, layout="tfds", root_dir=str(data_dir),
                     tfds_name="dagan_vox_frames")
  a = iter(pipeline.make_pair_dataset(files, seed=4, batch_size=3, num_repeats=2,
                                      **ONE_HOST))
  b = iter(pipeline.make_pair_dataset(tfds_params, seed=4, batch_size=3,
                                      num_repeats=2, **ONE_HOST))
  for _ in range(3):  # PNG frames are lossless: identical records.
    x, y = next(a), next(b)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  depth = next(iter(pipeline.make_depth_dataset(
      tfds_params, split="test", seed=0, batch_size=2, num_repeats=1,
      **ONE_HOST)))
  assert depth["frames"].shape == (2, 3, 256, 256, 3)


def test_reader_reads_single_frames_and_checks_records(vox_tfds):
  data_dir, _ = vox_tfds
  index, reader = tfds_builders.open_tfds_split(
      data_dir, "dagan_vox_frames", "train", frame_hw=(256, 256))
  frames = reader.read(2, [119, 0, 119])
  assert [f.shape for f in frames] == [(256, 256, 3)] * 3
  assert np.array_equal(frames[0], frames[2])
  wrong = tfds_builders.TfdsFrameReader(
      reader.dataset_dir, "train", reader.names, [0, 0, 0], reader.num_frames,
      (256, 256))
  with pytest.raises(DataError, match="record holds .* does not match"):
    wrong.read(1, [3])
  with pytest.raises(DataError, match="not built"):
    tfds_builders.open_tfds_split(data_dir, "dagan_hdtf_frames", "train",
                                  frame_hw=None)


def test_hdtf_build_keeps_jpeg_bytes_and_skips_bad(hdtf_root, tmp_path):
  import shutil
  root = tmp_path / "hdtf"
  shutil.copytree(hdtf_root / "train" / "WRA_PersonA_000.mp4",
                  root / "train" / "WRA_PersonA_000.mp4")
  make_folder_clip(root / "train" / "WXX_Small_000.mp4", [1, 2], size=(64, 64))
  with pytest.raises(DataError, match="WXX_Small_000.mp4: frames are 64x64"):
    tfds_builders.build_tfds(root, "hdtf", tmp_path / "fail", splits=("train",),
                             frame_shape=(512, 512, 3), cache_dir=tmp_path / "c")
  path = tfds_builders.build_tfds(root, "hdtf", tmp_path / "tfds",
                                  splits=("train",), frame_shape=(512, 512, 3),
                                  skip_bad=True, cache_dir=tmp_path / "c")
  meta = json.loads((path / "metadata.json").read_text())
  assert [r[0] for r in meta["clips"]["train"]] == ["WRA_PersonA_000.mp4"]
  assert "WXX_Small_000.mp4" in meta["excluded"]["train"][0][0]
  index, reader = tfds_builders.open_tfds_split(
      tmp_path / "tfds", "dagan_hdtf_frames", "train", frame_hw=(512, 512))
  src = reader._src()  # pylint: disable=protected-access
  from tensorflow_datasets.proto import tf_example_pb2
  raw = tf_example_pb2.Example.FromString(src[5]).features.feature["frame"]
  original = (root / "train" / "WRA_PersonA_000.mp4" / "000005.jpg").read_bytes()
  assert raw.bytes_list.value[0] == original
  params = params_for(tmp_path / "tfds", tmp_path, layout="tfds",
                      tfds_name="dagan_hdtf_frames", frame_shape=[256, 256, 3],
                      resize_frames=True)
  batch = next(iter(pipeline.make_pair_dataset(params, seed=0, batch_size=2,
                                               num_repeats=1, **ONE_HOST)))
  assert batch["source"].shape == (2, 256, 256, 3)
