"""Reading speech from audio and video files, and refusing bad ones."""

import glob
import os
import wave

import numpy as np
import pytest

from dagan_jax.audio import io as audio_io
from dagan_jax.errors import DataError


def _write_wav(path, samples, rate=16000, channels=1):
  with wave.open(str(path), "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(np.asarray(samples, "<i2").tobytes())
  return path


def test_16k_mono_wav_comes_back_sample_for_sample(tmp_path, shared_dir):
  rng = np.random.default_rng(0)
  x = rng.integers(-20000, 20000, size=12345).astype(np.int16)
  got = audio_io.read_speech(_write_wav(tmp_path / "a.wav", x))
  assert got.dtype == np.int16
  np.testing.assert_array_equal(got, x)
  # IP_LAP's float form of its own speech file.
  wav = audio_io.read_speech(shared_dir / "fixtures" / "ip_lap_small" /
                             "speech_16k.wav")
  want = np.load(shared_dir / "fixtures" / "ip_lap_small" / "fixture.npz")["audio/wav"]
  np.testing.assert_array_equal(audio_io.to_float(wav), want)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
  sr = 44100
  t = np.arange(sr) / sr
  tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
  stereo = np.stack([tone, tone], axis=1).reshape(-1)
  got = audio_io.read_speech(_write_wav(tmp_path / "s.wav", stereo, sr, 2))
  assert abs(got.size - 16000) <= 64
  spec = np.abs(np.fft.rfft(got[1000:15000].astype(np.float64)))
  peak_hz = np.argmax(spec) * 16000 / 14000
  assert abs(peak_hz - 440) < 3
  assert 6000 < np.abs(got[1000:15000]).max() < 10000


def test_talking_face_clips_have_their_speech(shared_dir):
  clips = sorted(glob.glob(str(shared_dir / "data" / "av_mini" / "*" / "*.mp4")))
  assert clips
  from dagan_jax.input import media
  for path in clips[:3]:
    x = audio_io.read_speech(path, min_seconds=0.04)
    frames, fps, _ = media.probe_video(path)
    assert x.size > 16000 * 0.5 and np.abs(x).max() > 1000
    # Sound and picture last as long, to within a frame or two (AAC's
    # priming and padding).
    assert abs(x.size / 16000 - frames / float(fps)) < 2.0 / float(fps)


def test_bad_files_are_named(tmp_path, shared_dir):
  with pytest.raises(DataError, match="no such audio file"):
    audio_io.read_speech(tmp_path / "missing.wav")
  junk = tmp_path / "junk.mp3"
  junk.write_bytes(os.urandom(4000))
  with pytest.raises(DataError, match="junk.mp3"):
    audio_io.read_speech(junk)
  from dagan_jax.input import media
  silent_video = tmp_path / "silent.mp4"
  media.write_video(silent_video, np.zeros((5, 32, 32, 3), np.uint8))
  with pytest.raises(DataError, match="silent.mp4: no audio stream"):
    audio_io.read_speech(silent_video)
  frame_folder = sorted(glob.glob(str(shared_dir / "data" / "vox_mini" / "*" / "*.mp4")))[0]
  with pytest.raises(DataError, match="is a folder"):
    audio_io.read_speech(frame_folder)
  with pytest.raises(DataError, match="no samples"):
    audio_io.read_speech(_write_wav(tmp_path / "empty.wav", []))
  short = _write_wav(tmp_path / "short.wav", np.ones(320, np.int16))
  with pytest.raises(DataError, match="short.wav: the audio lasts 0.020 s"):
    audio_io.read_speech(short, min_seconds=0.04)
