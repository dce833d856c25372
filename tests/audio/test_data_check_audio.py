"""`dagan-jax data check --audio`: talking-face clips with their sound, and
every clip without usable sound named."""

import shutil
import wave

import numpy as np

from dagan_jax import cli
from dagan_jax.audio import sources
from dagan_jax.input import media


def _wav(path, seconds, rate=16000):
  n = int(round(seconds * rate))
  t = np.arange(n) / rate
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes((3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())


def test_talking_face_clips_pass(shared_dir, tmp_path, capsys, monkeypatch):
  from dagan_jax.audio import io as audio_io
  decoded = []
  read_speech = audio_io.read_speech

  def counting(path, *args, **kwargs):
    decoded.append(str(path))
    return read_speech(path, *args, **kwargs)

  monkeypatch.setattr(audio_io, "read_speech", counting)
  root = shared_dir / "data" / "av_mini"
  rc = cli.main(["data", "check", "--root", str(root),
                 "--layout", "vox", "--audio", "--num-sample-frames", "1",
                 "--cache-dir", str(tmp_path / "c")])
  out = capsys.readouterr().out
  assert rc == 0, out
  assert "OK: no bad files" in out
  # Each clip's sound is decoded once (length check and lip sync share it).
  clips = sorted(str(p) for p in root.glob("*/*.mp4"))
  assert sorted(decoded) == clips


def test_clips_without_usable_sound_are_named(shared_dir, tmp_path, capsys):
  root = tmp_path / "data"
  train = root / "train"
  train.mkdir(parents=True)
  good = sorted((shared_dir / "data" / "av_mini" / "train").glob("*.mp4"))[0]
  shutil.copy(good, train / good.name)
  frames = (np.random.default_rng(0).random((20, 256, 256, 3)) * 255).astype(np.uint8)
  media.write_video(train / "p1#silent.mp4", frames)          # no sound
  media.write_video(train / "p2#sidecar.mp4", frames)         # sidecar, 0.8 s
  _wav(train / "p2#sidecar.wav", 20 / 25)
  media.write_video(train / "p3#short.mp4", frames)           # sidecar too short
  _wav(train / "p3#short.wav", 0.5)
  media.write_video(train / "p4#corrupt.mp4", frames)         # sidecar is junk
  (train / "p4#corrupt.wav").write_bytes(b"RIFF" + bytes(range(200)))
  assert sources.audio_source(train / "p2#sidecar.mp4").endswith("p2#sidecar.wav")
  assert sources.audio_source(train / good.name) == str(train / good.name)
  rc = cli.main(["data", "check", "--root", str(root), "--layout", "vox",
                 "--split", "train", "--audio", "--num-sample-frames", "1",
                 "--cache-dir", str(tmp_path / "c")])
  out = capsys.readouterr().out
  assert rc == 1, out
  assert "p1#silent.mp4: no audio stream" in out
  assert "p3#short.mp4" in out and "more than one frame apart" in out
  assert "p4#corrupt.mp4: " in out and "p4#corrupt.wav: cannot open" in out
  assert "p2#sidecar" not in out.split("bad files")[1]  # a good sidecar
  assert "train: 2 clips" in out and "3 bad" in out  # sidecars are not clips


def test_sound_shifted_by_ten_frames_is_flagged(shared_dir, tmp_path, capsys):
  import pytest
  from dagan_jax.audio import io as audio_io
  from dagan_jax.face import mesh
  if not mesh.face_available():
    pytest.skip("the face extra is not installed")
  root = tmp_path / "data"
  train = root / "train"
  train.mkdir(parents=True)
  clip = shared_dir / "data" / "av_mini" / "train" / "st_reagan#clip1.mp4"
  shutil.copy(clip, train / "p1#in_sync.mp4")
  shutil.copy(clip, train / "p2#late.mp4")
  # The late copy's sound, as a sidecar (which wins over the mp4's own),
  # starts 10 frames (400 ms) after the picture.
  samples = audio_io.read_speech(clip)
  late = np.concatenate([np.zeros(6400, np.int16), samples[:-6400]])
  with wave.open(str(train / "p2#late.wav"), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(late.astype("<i2").tobytes())
  rc = cli.main(["data", "check", "--root", str(root), "--layout", "vox",
                 "--split", "train", "--audio", "--num-sample-frames", "1",
                 "--cache-dir", str(tmp_path / "c")])
  out = capsys.readouterr().out
  assert rc == 1, out
  bad = out.split("bad files")[1]
  assert "p2#late.mp4: sound and picture out of sync" in bad
  assert "p1#in_sync" not in bad
  lines = {ln.split(":")[0].strip(): ln for ln in out.splitlines() if ln.startswith("      p")}
  offsets = {k: int(v.split(": ")[1].split(" ")[0]) for k, v in lines.items()}
  assert abs(offsets["p1#in_sync.mp4"]) <= 2 and abs(offsets["p2#late.mp4"] - 10) <= 1, out
