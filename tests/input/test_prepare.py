"""``dagan-jax data prepare`` on real clips: the arrays it stores are the
library's own results for each clip, bad clips are reported, reruns resume,
other tools are refused, and the AV pipeline streams the result."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import wave

import numpy as np
import pytest

from dagan_jax import cli
from dagan_jax.audio import mel as mel_lib
from dagan_jax.audio import speech_features
from dagan_jax.errors import ConfigError
from dagan_jax.face import crop, pose
from dagan_jax.face import mesh as mesh_lib
from dagan_jax.input import av_windows, clip_faces, media, prepare
from input_helpers import params_for

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "inference"))
from inference_helpers import save_tiny_model  # noqa: E402

pytestmark = pytest.mark.skipif(not mesh_lib.face_available(),
                                reason="the face extra is not installed")
TRAIN = ("grid_s1#bbaf2n.mp4", "grid_s1#bbaf3s.mp4")


def _wav(path, samples):
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(np.asarray(samples, np.int16).tobytes())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shared_dir):
  base = tmp_path_factory.mktemp("prep")
  root = base / "root"
  (root / "train").mkdir(parents=True)
  (root / "test").mkdir()
  for name in TRAIN:
    shutil.copy(shared_dir / "data/av_mini/train" / name, root / "train" / name)
  # Bad clips: noise frames with speech beside them (no face), and a real
  # face clip without any sound.
  rng = np.random.default_rng(0)
  media.write_video(root / "test" / "noise#a.mp4",
                    rng.integers(0, 256, (10, 64, 64, 3), np.uint8))
  _wav(root / "test" / "noise#a.wav", rng.normal(0, 3000, 6400))
  frames = np.stack(media.read_native_frames(shared_dir / "data/av_mini/train" / TRAIN[0],
                                             list(range(8))))
  media.write_video(root / "test" / "silent#b.mp4", frames)
  model = save_tiny_model(base / "model")
  out = base / "out"
  argv = ["data", "prepare", "--root", str(root), "--out", str(out), "--pitch", "yin",
          "--model", str(model), "--cache-dir", str(base / "cache"), "--no-progress"]
  rc = cli.main(argv)
  return root, out, model, argv, rc, base


def test_arrays_are_the_clips_own(prepared):
  root, out, model, _, rc, _ = prepared
  assert rc == 1            # the two bad test clips
  for name in TRAIN:
    clip = root / "train" / name
    z = np.load(prepare.clip_file(out, "train", name))
    n, fps, hw = media.probe_video(clip)
    assert int(z["num_frames"]) == n and float(z["fps"]) == fps
    rows, tracker = speech_features.features_from_file(clip, tracker="yin")
    np.testing.assert_allclose(z["a2h_features"], rows.astype(np.float32))
    np.testing.assert_allclose(z["mel"], mel_lib.mel_from_file(clip).astype(np.float32))
    res = clip_faces.mesh_clip(clip)
    np.testing.assert_allclose(z["mesh"], res.points, atol=1e-4)
    np.testing.assert_array_equal(z["face_found"], res.found)
    assert z["face_found"].all()
    np.testing.assert_allclose(z["crop_box"], crop.clip_box(res.points, res.found), rtol=1e-5)
    np.testing.assert_allclose(z["pose"], pose.head_poses(res.points, hw, res.found),
                               rtol=1e-4, atol=1e-3)
    assert z["kp_value"].shape == (n, 4, 2) and z["kp_jacobian"].shape == (n, 4, 2, 2)
    assert np.isfinite(z["kp_value"]).all()
    tools = json.loads(str(z["tools"]))
    assert tools["pitch"] == tracker == "yin"
    assert tools["model"]["dir"] == str(pathlib.Path(model).resolve())
  manifest = prepare.read_manifest(out)
  assert manifest["tools"] == tools and manifest["layout"] == "vox"
  assert sorted(manifest["clips"]) == [f"train/{n}" for n in TRAIN]


def test_bad_clips_are_named(prepared, capsys):
  _, out, _, argv, _, _ = prepared
  assert cli.main(argv) == 1
  text = capsys.readouterr().out
  assert "FAILED test/noise#a.mp4" in text and "no face in any of its 10 frames" in text
  assert "FAILED test/silent#b.mp4" in text and "no audio stream" in text
  assert "prepared 0 clip(s)" in text and "2 already prepared" in text


def test_rerun_resumes_and_redoes_changed_clips(prepared):
  root, out, _, argv, _, _ = prepared
  f = prepare.clip_file(out, "train", TRAIN[1])
  before = f.stat().st_mtime_ns
  # A changed source (touched) is prepared again; the other is kept.
  clip = root / "train" / TRAIN[1]
  st = clip.stat()
  os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  report = prepare.prepare_dataset(
      root, out, pitch_tracker="yin", model_dir=argv[argv.index("--model") + 1],
      cache_dir=argv[argv.index("--cache-dir") + 1], progress=False, splits=("train",))
  assert report.prepared == [f"train/{TRAIN[1]}"] and report.skipped == [f"train/{TRAIN[0]}"]
  assert f.stat().st_mtime_ns != before


def test_other_tools_are_refused(prepared):
  root, out, _, _, _, base = prepared
  with pytest.raises(ConfigError, match="prepared with other tools"):
    prepare.prepare_dataset(root, out, pitch_tracker="yin", progress=False,
                            cache_dir=str(base / "cache"), splits=("train",))


def test_pipeline_streams_the_prepared_clips(prepared):
  root, out, _, _, _, base = prepared
  params = params_for(root, base / "cache", frame_shape=[64, 64, 3])
  ds = av_windows.build_av_window_dataset(params, out, seed=0, window=5,
                                          process_index=0, process_count=1)
  rec = ds[0]
  assert rec["frames"].shape == (5, 64, 64, 3) and rec["kp_value"].shape == (5, 4, 2)
  z = np.load(prepare.clip_file(out, "train", TRAIN[int(rec["clip"])]))
  s = int(rec["start"])
  np.testing.assert_array_equal(rec["kp_value"], z["kp_value"][s:s + 5])
  np.testing.assert_array_equal(rec["pose"], z["pose"][s:s + 5])
