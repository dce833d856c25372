"""IP_LAP's audio input: the 80-band log-mel spectrogram of its (Wav2Lip's)
``models/audio.py`` and the 16-step chunk of it per video frame.

With IP_LAP's hyper-parameters (16 kHz; ``n_fft`` 800, hop 200, window
800; 80 mel bands over 55-7600 Hz; pre-emphasis 0.97; ``ref_level_db`` 20,
``min_level_db`` -100; symmetric normalisation to [-4, 4] with clipping),
its ``melspectrogram(wav)`` is, and :func:`melspectrogram` computes:

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``lfilter([1, -0.97], [1])``,
   so ``y[0] = x[0]``);
2. the STFT as librosa 0.9.2 computes it by default: frames centred on
   ``t * 200`` (the signal zero-padded by 400 on both sides, librosa 0.9's
   ``pad_mode='constant'``), a periodic Hann window of 800, ``|rfft|``;
3. librosa's mel filterbank (Slaney's mel scale: linear below 1 kHz,
   logarithmic above; Slaney's area normalisation; float32 weights, as
   librosa returns them) applied to the magnitudes;
4. ``20 log10(max(1e-5, .)) - 20`` dB, then ``clip(8 (S + 100) / 100 - 4,
   -4, 4)``.

The result is (80, frames) float64, ``frames = 1 + len(wav) // 200``.
:func:`mel_chunks` cuts it per video frame as IP_LAP's ``inference.py``
does.
"""

from __future__ import annotations

import numpy as np

from dagan_jax.audio import align
from dagan_jax.audio import io as audio_io

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
#: Mel frames per second (16000 / 200) and per chunk.
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // HOP
CHUNK_STEPS = 16


def _hz_to_mel_slaney(hz):
  hz = np.asarray(hz, np.float64)
  f_sp = 200.0 / 3
  mel = hz / f_sp
  min_log_hz, min_log_mel = 1000.0, 1000.0 / f_sp
  logstep = np.log(6.4) / 27.0
  return np.where(hz >= min_log_hz,
                  min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep,
                  mel)


def _mel_to_hz_slaney(mel):
  mel = np.asarray(mel, np.float64)
  f_sp = 200.0 / 3
  hz = f_sp * mel
  min_log_hz, min_log_mel = 1000.0, 1000.0 / f_sp
  logstep = np.log(6.4) / 27.0
  return np.where(mel >= min_log_mel,
                  min_log_hz * np.exp(logstep * (mel - min_log_mel)), hz)


def mel_basis(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
              num_mels: int = NUM_MELS, fmin: float = FMIN,
              fmax: float = FMAX) -> np.ndarray:
  """librosa's ``filters.mel`` (Slaney scale and normalisation), float32:
  (num_mels, 1 + n_fft // 2)."""
  fft_freqs = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
  mel_freqs = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin),
                                            _hz_to_mel_slaney(fmax),
                                            num_mels + 2))
  fdiff = np.diff(mel_freqs)
  ramps = mel_freqs[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  weights *= (2.0 / (mel_freqs[2:num_mels + 2] - mel_freqs[:num_mels]))[:, None]
  return weights.astype(np.float32)


def stft_magnitude(y: np.ndarray) -> np.ndarray:
  """``|librosa.stft(y, n_fft=800, hop_length=200, win_length=800)|`` with
  librosa 0.9's defaults (centred frames, zero padding, periodic Hann):
  (401, 1 + len(y) // 200)."""
  y = np.asarray(y, np.float64)
  pad = N_FFT // 2
  yp = np.pad(y, (pad, pad), mode="constant")
  n = 1 + (yp.size - N_FFT) // HOP
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
  frames = yp[np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]]
  return np.abs(np.fft.rfft(frames * window, N_FFT)).T


def melspectrogram(wav: np.ndarray) -> np.ndarray:
  """IP_LAP's normalised log-mel spectrogram of float ``wav`` (16 kHz,
  [-1, 1)): (80, 1 + len(wav) // 200) float64 in [-4, 4]."""
  x = np.asarray(wav, np.float64)
  y = np.append(x[:1], x[1:] - PREEMPHASIS * x[:-1])
  mel = mel_basis() @ stft_magnitude(y)
  min_level = np.exp(MIN_LEVEL_DB / 20.0 * np.log(10.0))
  s = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
  return np.clip((2 * MAX_ABS_VALUE) * ((s - MIN_LEVEL_DB) / -MIN_LEVEL_DB)
                 - MAX_ABS_VALUE, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def chunk_starts(num_mel_frames: int, fps: align.Rate = 25) -> np.ndarray:
  """First mel frame of each video frame's chunk, for every frame whose
  16-step chunk fits: IP_LAP's ``int(i * 80 / fps)`` while ``start + 16 <=
  frames`` (its ``inference.py`` stops at the first chunk that does not
  fit), computed with exact rates (:mod:`dagan_jax.audio.align`)."""
  return align.frame_starts(num_mel_frames, fps, MEL_FRAMES_PER_SECOND,
                            CHUNK_STEPS)


def mel_chunks(mel: np.ndarray, fps: align.Rate = 25) -> np.ndarray:
  """(frames, 80, 16) float32: the mel chunk of each video frame."""
  starts = chunk_starts(mel.shape[1], fps)
  if starts.size == 0:
    return np.zeros((0, mel.shape[0], CHUNK_STEPS), np.float32)
  idx = starts[:, None] + np.arange(CHUNK_STEPS)[None, :]
  return np.asarray(mel[:, idx].transpose(1, 0, 2), np.float32)


def mel_from_file(path, *, min_seconds: float = 0.04) -> np.ndarray:
  """IP_LAP's spectrogram of the speech in ``path`` (any audio or video
  file, read as 16 kHz mono and scaled to [-1, 1) as librosa loads it)."""
  return melspectrogram(audio_io.to_float(
      audio_io.read_speech(path, min_seconds=min_seconds)))

