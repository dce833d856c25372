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


def test_talking_face_clips_pass(shared_dir, tmp_path, capsys):
  rc = cli.main(["data", "check", "--root", str(shared_dir / "data" / "av_mini"),
                 "--layout", "vox", "--audio", "--num-sample-frames", "1",
                 "--cache-dir", str(tmp_path / "c")])
  out = capsys.readouterr().out
  assert rc == 0, out
  assert "OK: no bad files" in out


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
