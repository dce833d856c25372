"""``speak`` end to end against the official Audio2Head: the fixture's
checkpoint converted by ``dagan-jax convert --audio2head``, its speech and
face through :class:`dagan_jax.inference.speak.Speaker`, every stage
compared with what the official inference computed (features through
Harvest, poses, pose boxes, stitched keypoints, the generated frames).

Bounds as the other parity tests (relative to max(1, max|official|)): 1e-4
up to the keypoints; the generated frames lie behind the 256x256 warp,
which amplifies float32 rounding of the keypoints (1e-5 here) to ~1e-4, so
they get FREE_RUN_RTOL (1e-3) as in tests/models/test_parity.py, and a
mean error bound of 1e-5. Runs unchanged on any fixture of this layout
(``DAGAN_A2H_FIXTURE``).
"""

from __future__ import annotations

import subprocess
import sys
import wave

import numpy as np
import pytest

from dagan_jax import cli
from dagan_jax.audio import pitch
from dagan_jax.errors import DataError

RTOL = 1e-4
FREE_RUN_RTOL = 1e-3

pytestmark = pytest.mark.skipif(not pitch.harvest_available(),
                                reason="Audio2Head's features use Harvest (pyworld)")


def _err(a, b):
  b = np.asarray(b, np.float64)
  return float(np.abs(np.asarray(a, np.float64) - b).max() / max(1.0, np.abs(b).max()))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, a2h_dir):
  pytest.importorskip("torch")
  out = tmp_path_factory.mktemp("a2h") / "model"
  assert cli.main(["convert", "--audio2head", str(a2h_dir / "audio2head.pth.tar"),
                   "--config", str(a2h_dir / "config.yaml"), "--out", str(out)]) == 0
  return out


@pytest.fixture(scope="module")
def speaker(model_dir):
  from dagan_jax.inference.speak import Speaker
  return Speaker.from_checkpoint(model_dir, batch_size=4, window_batch=2)


@pytest.fixture(scope="module")
def spoken(speaker, a2h_npz):
  image = a2h_npz["source/image_uint8"].astype(np.float32) / 255.0
  return speaker.speak(image, a2h_npz["audio/wav_int16"])


def test_parity_audio2head_speak_stages(spoken, a2h_npz):
  z = a2h_npz
  assert spoken.pitch_tracker == "harvest"
  t = z["audio/blocks"].shape[0]
  assert spoken.frames.shape == (t, 256, 256, 3)
  assert _err(spoken.poses[:, :3], z["audio2pose/rot"]) < RTOL
  assert _err(spoken.poses[:, 3:], z["audio2pose/trans"]) < RTOL
  # Boxes are integer pixel drawings of the poses: equal, at most a pixel
  # where a projected corner falls on a rounding edge.
  assert int((spoken.boxes != z["pose/boxes"]).sum()) <= 4 * len(spoken.boxes)
  assert _err(spoken.kp_value, z["kp_driving/value"]) < RTOL
  assert _err(spoken.kp_jacobian, z["kp_driving/jacobian"]) < RTOL
  for i, f in enumerate(z["generator/frames"]):
    want = z[f"generator/{i}/prediction"][0].transpose(1, 2, 0)
    assert _err(spoken.frames[f], want) < FREE_RUN_RTOL, f
    assert np.abs(spoken.frames[f] - want).mean() < 1e-5, f


def test_still_pose_and_relative_motion(speaker, a2h_npz, spoken):
  image = a2h_npz["source/image_uint8"].astype(np.float32) / 255.0
  samples = a2h_npz["audio/wav_int16"][:16000]          # 1 s: 24 frames (below)
  still = speaker.speak(image, samples, pose="still", relative=True)
  assert len(still.frames) == 24
  np.testing.assert_array_equal(still.poses, np.repeat(still.poses[:1], 25, 0))
  np.testing.assert_allclose(still.poses[0], spoken.poses[0], rtol=1e-5, atol=1e-4)
  # Relative motion: the first frame's keypoints are the source's own.
  src = speaker.compiled.source_fn(speaker.variables, image[None])["kp"]["value"]
  assert np.isfinite(still.frames).all()
  assert still.frames.shape == (24, 256, 256, 3) and src.shape[1] == still.kp_value.shape[1]


@pytest.mark.parametrize("n_samples", [721, 640 * 7 + 100, 640 * 20 + 300])
def test_any_length_gives_one_frame_per_four_feature_rows(speaker, a2h_npz, n_samples):
  # As the official code: one frame per 4 whole rows of 10 ms features,
  # rows = 1 + ceil((N - 400) / 160) (25 ms windows, the last zero-padded):
  # 40 ms per frame, the final partial 40 ms dropped (1.0 s -> 24 frames).
  image = a2h_npz["source/image_uint8"].astype(np.float32) / 255.0
  got = speaker.speak(image, a2h_npz["audio/wav_int16"][:n_samples])
  rows = 1 + -(-(n_samples - 400) // 160)
  assert len(got.frames) == rows // 4
  assert len(got.kp_value) == len(got.frames) and len(got.poses) == rows // 4 + 1
  with pytest.raises(DataError, match="clip.wav: 720 samples .* give 3 feature rows"):
    speaker.speak(image, a2h_npz["audio/wav_int16"][:720], where="clip.wav")


def test_speak_command_writes_video_with_sound(model_dir, a2h_npz, tmp_path):
  from dagan_jax.audio import io as audio_io
  from dagan_jax.input import media
  wav = tmp_path / "speech.wav"
  samples = a2h_npz["audio/wav_int16"][:24000]
  with wave.open(str(wav), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(samples.astype("<i2").tobytes())
  img = tmp_path / "face.png"
  import PIL.Image
  PIL.Image.fromarray(a2h_npz["source/image_uint8"]).resize((300, 300)).save(img)
  out = tmp_path / "out.mp4"
  rc = subprocess.run([sys.executable, "-m", "dagan_jax.cli", "speak", "--checkpoint",
                       str(model_dir), "--source", str(img), "--audio", str(wav),
                       "--out", str(out), "--no-progress", "--side-by-side"],
                      capture_output=True, text=True, timeout=600)
  assert rc.returncode == 0, rc.stderr[-2000:]
  n, fps, hw = media.probe_video(out)
  assert (n, fps, hw) == (37, 25.0, (256, 256))    # 1.5 s of speech
  sound = audio_io.read_speech(out)
  assert abs(len(sound) - len(samples)) < 2048      # AAC's padding at most
  assert media.probe_video(tmp_path / "out_side_by_side.mp4")[2] == (256, 768)


def test_bad_inputs_are_named(model_dir, tmp_path, a2h_dir, capsys):
  bad = tmp_path / "bad.wav"
  bad.write_bytes(b"not a sound")
  def fails(argv, *names):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    for name in names:
      assert name in err, err

  fails(["speak", "--checkpoint", str(model_dir), "--source", str(tmp_path / "none.png"),
         "--audio", str(bad), "--out", str(tmp_path / "o.mp4")], "bad.wav")
  face = tmp_path / "face.txt"
  face.write_text("not an image")
  fails(["speak", "--checkpoint", str(model_dir), "--source", str(face), "--audio",
         str(a2h_dir.parent / "ip_lap_small" / "speech_16k.wav"), "--out",
         str(tmp_path / "o.mp4")], "face.txt")
  # Released sizes for the small fixture's weights: named key by key.
  fails(["convert", "--audio2head", str(a2h_dir / "audio2head.pth.tar"),
         "--out", str(tmp_path / "m")], "audio2kp", "kp_detector", "seq_len 16")
