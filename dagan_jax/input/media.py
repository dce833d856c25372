"""Image and video IO: read only the frames asked for, write mp4/PNG/npy.

Conventions
-----------
* Frames are returned NHWC: one frame ``(H, W, 3)``, a clip ``(T, H, W, 3)``.
  The public readers (:func:`read_image`, :func:`read_video`,
  :func:`read_frames`) return float32 RGB in [0, 1]. The training pipeline uses
  :func:`read_native_frames`, which returns the decoded arrays untouched
  (RGB channel order, native dtype and channel count) so that it can reject a
  frame instead of quietly converting it.
* A *clip* is any of (FOMM's ``read_video`` accepts the same set):

  - a video file: ``.mp4 .mov .avi .mkv .webm .m4v`` (PyAV) or ``.gif`` (PIL);
  - a folder of frame images (``.png .jpg .jpeg .bmp .webp .tif .tiff``),
    ordered by *natural* sort of the file names (``2.png`` before ``10.png``;
    zero-padded names sort the same either way); other files are ignored.
    VoxCeleb as FOMM's preprocessing writes it names such folders
    ``<person>#<video>#<start>#<end>.mp4``: a folder is recognised by being a
    directory, whatever its name;
  - a single image that is a horizontal strip of frames (frame ``i`` is columns
    ``[i * w, (i + 1) * w)``); the frame width ``w`` is ``frame_width`` when
    given, else the image height (square frames, as in VoxCeleb and TaiChi);
  - a ``.npy`` array ``(T, H, W, 3)`` (uint8, or float in [0, 1]).
* Frame ``i`` of a video is the ``i``-th frame the decoder outputs, counting
  from 0. :func:`read_frames` decodes forward from the start (or, for a target
  at least ``SEEK_MIN_FRAMES`` in, from the keyframe before it when the stream
  has a constant frame rate) and stops at the last frame asked for; only the
  frames asked for are converted to RGB. Nothing decodes a whole video to pick
  two frames.
* Conversions done by the public readers, each announced once per file by a
  ``logging`` warning: greyscale -> RGB by replication, RGBA/LA -> RGB by
  dropping alpha (as FOMM does), 16-bit -> float by dividing by 65535, palette
  images -> RGB.
* Every failure a user can cause (missing file, unreadable or truncated data,
  too few frames, unknown extension) raises :class:`DataError` naming the file.
  Images are decoded with OpenCV (2-3x faster than PIL for JPEG); its own
  codec log lines are silenced process-wide on first use, since the
  DataError already says what is wrong.
"""

from __future__ import annotations

import fractions
import logging
import os
import pathlib
import re
from typing import Iterable, Iterator, Sequence

import numpy as np

from dagan_jax.errors import DataError

log = logging.getLogger("dagan_jax.input")

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
GIF_EXTS = (".gif",)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
NPY_EXTS = (".npy",)

# A video target at least this many frames in is reached by seeking to the
# keyframe before it (when the stream has a constant frame rate).
SEEK_MIN_FRAMES = 48

PathLike = str | os.PathLike

_noticed: set[tuple[str, str]] = set()


def _notice(path: PathLike, what: str) -> None:
  """Logs a conversion once per (file, kind of conversion)."""
  key = (str(path), what)
  if key not in _noticed:
    _noticed.add(key)
    log.warning("%s: %s", path, what)


def natural_key(name: str) -> list:
  """Sort key that orders embedded numbers by value (``2.png`` < ``10.png``)."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_frame_files(folder: PathLike) -> list[str]:
  """Names of the image files in ``folder`` in frame order (natural sort).

  Hidden files and files with other extensions are ignored.
  """
  try:
    names = os.listdir(folder)
  except OSError as e:
    raise DataError(f"cannot list frame folder {folder}: {e.strerror or e}") from e
  names = [n for n in names
           if not n.startswith(".") and n.lower().endswith(IMAGE_EXTS)]
  names.sort(key=natural_key)
  return names


def clip_kind(path: PathLike) -> str:
  """``'folder'``, ``'video'``, ``'gif'``, ``'strip'`` or ``'npy'``.

  Raises :class:`DataError` if the path does not exist or has an extension that
  is none of these.
  """
  p = str(path)
  if os.path.isdir(p):
    return "folder"
  if not os.path.exists(p):
    raise DataError(f"no such file or folder: {p}")
  ext = os.path.splitext(p)[1].lower()
  if ext in VIDEO_EXTS:
    return "video"
  if ext in GIF_EXTS:
    return "gif"
  if ext in IMAGE_EXTS:
    return "strip"
  if ext in NPY_EXTS:
    return "npy"
  raise DataError(
      f"{p}: unknown clip type {ext or '(no extension)'!r}; expected a folder "
      f"of frames, a video ({' '.join(VIDEO_EXTS + GIF_EXTS)}), a strip image "
      f"({' '.join(IMAGE_EXTS)}) or .npy")


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def _cv2():
  """cv2 with its own codec log messages silenced: a broken file is reported
  once, by the DataError raised here, not also by libpng/libjpeg on stderr."""
  import cv2  # pylint: disable=import-outside-toplevel
  global _cv2_quiet
  if not _cv2_quiet:
    _cv2_quiet = True
    try:
      cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:
      pass
  return cv2


_cv2_quiet = False


def decode_image_bytes(data: bytes, where: PathLike = "<bytes>") -> np.ndarray:
  """Decodes PNG/JPEG/... bytes to a native array in RGB(A) channel order.

  Returns uint8 or uint16, ``(H, W)`` for greyscale, else ``(H, W, C)`` with
  C in {3, 4}. A JPEG without its end-of-image marker counts as truncated
  (libjpeg would otherwise fill the missing rows with grey and carry on).
  """
  cv2 = _cv2()
  if not data:
    raise DataError(f"{where}: empty image file")
  if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00")[-2:] == b"\xff\xd9":
    raise DataError(f"{where}: truncated JPEG (no end-of-image marker)")
  buf = np.frombuffer(data, np.uint8)
  img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
  if img is None:
    raise DataError(f"{where}: cannot decode image (corrupt or not an image)")
  if img.ndim == 3:
    if img.shape[2] == 3:
      img = img[..., ::-1]
    elif img.shape[2] == 4:
      img = img[..., [2, 1, 0, 3]]
    elif img.shape[2] == 1:
      img = img[..., 0]
  return np.ascontiguousarray(img)


def read_image_native(path: PathLike) -> np.ndarray:
  """The decoded image at ``path`` (see :func:`decode_image_bytes`)."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"cannot read image {path}: {e.strerror or e}") from e
  return decode_image_bytes(data, path)


def image_header(path: PathLike) -> tuple[int, int, str]:
  """``(height, width, PIL mode)`` from the file header, without decoding."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      return im.size[1], im.size[0], im.mode
  except (OSError, ValueError, SyntaxError) as e:
    raise DataError(f"{path}: cannot read image header: {e}") from e


def to_float_rgb(img: np.ndarray, where: PathLike = "<array>") -> np.ndarray:
  """Any decoded image -> ``(H, W, 3)`` float32 in [0, 1], with notices."""
  if img.dtype == np.uint8:
    scale = 255.0
  elif img.dtype == np.uint16:
    _notice(where, "16-bit image scaled to [0, 1] by 1/65535")
    scale = 65535.0
  elif np.issubdtype(img.dtype, np.floating):
    scale = 1.0
  else:
    raise DataError(f"{where}: unsupported pixel type {img.dtype}")
  if img.ndim == 2:
    _notice(where, "greyscale image converted to RGB")
    img = np.repeat(img[..., None], 3, axis=-1)
  elif img.ndim == 3 and img.shape[2] == 1:
    _notice(where, "greyscale image converted to RGB")
    img = np.repeat(img, 3, axis=-1)
  elif img.ndim == 3 and img.shape[2] == 2:
    _notice(where, "greyscale+alpha image converted to RGB (alpha dropped)")
    img = np.repeat(img[..., :1], 3, axis=-1)
  elif img.ndim == 3 and img.shape[2] == 4:
    _notice(where, "RGBA image converted to RGB (alpha dropped)")
    img = img[..., :3]
  elif not (img.ndim == 3 and img.shape[2] == 3):
    raise DataError(f"{where}: expected an image, got an array of shape "
                    f"{img.shape}")
  out = img.astype(np.float32)
  if scale != 1.0:
    out /= scale
  return out


def read_image(path: PathLike) -> np.ndarray:
  """Reads an image file as ``(H, W, 3)`` float32 RGB in [0, 1].

  Greyscale, RGBA and 16-bit images are converted (with a logged notice).
  """
  if os.path.isdir(path):
    raise DataError(f"{path} is a folder; expected an image file")
  return to_float_rgb(read_image_native(path), path)


# --------------------------------------------------------------------------
# Videos (PyAV) and GIFs (PIL)
# --------------------------------------------------------------------------


def _av_open(path: PathLike):
  import av  # pylint: disable=import-outside-toplevel
  try:
    container = av.open(str(path))
  except (av.FFmpegError, OSError, ValueError) as e:
    why = getattr(e, "strerror", None) or str(e)
    raise DataError(f"{path}: cannot open video ({why})") from e
  if not container.streams.video:
    container.close()
    raise DataError(f"{path}: no video stream")
  return container


def _stream_rate(stream) -> fractions.Fraction | None:
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  return fractions.Fraction(rate) if rate else None


def _probe_av(path: PathLike) -> tuple[int, float | None, tuple[int, int]]:
  import av  # pylint: disable=import-outside-toplevel
  container = _av_open(path)
  try:
    stream = container.streams.video[0]
    h, w = stream.codec_context.height, stream.codec_context.width
    rate = _stream_rate(stream)
    n = int(stream.frames or 0)
    if n <= 0:  # No count in the header: count packets (demux, no decoding).
      try:
        n = sum(1 for pkt in container.demux(stream) if pkt.size)
      except (av.FFmpegError, ValueError) as e:
        raise DataError(f"{path}: cannot read video packets: {e}") from e
  finally:
    container.close()
  if not h or not w:
    raise DataError(f"{path}: video stream has no frame size")
  return n, (float(rate) if rate else None), (int(h), int(w))


class _Restart(Exception):
  """Seeking gave timestamps that do not map to frame indices."""


def _iter_av(path: PathLike, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
  """Yields ``(index, rgb24 frame)`` for the sorted unique indices ``wanted``.

  Frames are counted as decoded from the start. When the first target is at
  least ``SEEK_MIN_FRAMES`` in, decoding starts at the keyframe before it and
  indices come from timestamps; if those are not consecutive (variable frame
  rate, missing pts) before anything was yielded, it starts over from frame 0.
  """
  import av  # pylint: disable=import-outside-toplevel
  if not wanted:
    return
  wanted_set = set(wanted)
  last = wanted[-1]
  container = _av_open(path)
  try:
    stream = container.streams.video[0]
    rate = _stream_rate(stream)
    if wanted[0] >= SEEK_MIN_FRAMES and rate is not None and stream.time_base:
      tb = fractions.Fraction(stream.time_base)
      start = stream.start_time or 0
      prev = None
      try:
        container.seek(start + int(round(wanted[0] / rate / tb)), stream=stream,
                       backward=True, any_frame=False)
        for frame in container.decode(stream):
          if frame.pts is None:
            raise _Restart()
          idx = int(round((frame.pts - start) * tb * rate))
          if idx > wanted[0] if prev is None else idx != prev + 1:
            raise _Restart()
          prev = idx
          if idx in wanted_set:
            yield idx, frame.to_ndarray(format="rgb24")
          if idx >= last:
            return
      except _Restart:
        if prev is not None and prev >= wanted[0]:
          raise DataError(f"{path}: frame timestamps are irregular; cannot "
                          f"read frames {list(wanted)} by index") from None
      except (av.FFmpegError, ValueError) as e:
        raise DataError(f"{path}: decoding failed after seeking to frame "
                        f"{wanted[0]}: {e}") from e
      else:
        missing = [i for i in wanted if prev is None or i > prev]
        raise DataError(
            f"{path}: video ended before frame {missing[0]} (frame indices "
            f"count from 0; header says {stream.frames} frames)")
      container.close()
      container = _av_open(path)
      stream = container.streams.video[0]
    idx = -1
    try:
      for frame in container.decode(stream):
        idx += 1
        if idx in wanted_set:
          yield idx, frame.to_ndarray(format="rgb24")
        if idx >= last:
          return
    except (av.FFmpegError, ValueError) as e:
      raise DataError(f"{path}: decoding failed at frame {idx + 1}: {e}") from e
    missing = [i for i in wanted if i > idx]
    raise DataError(
        f"{path}: video has only {idx + 1} decodable frames; frame "
        f"{missing[0]} was asked for (header says {stream.frames} frames)")
  finally:
    container.close()


def _gif_open(path: PathLike):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    return Image.open(path)
  except (OSError, ValueError, SyntaxError) as e:
    raise DataError(f"cannot open GIF {path}: {e}") from e


def _probe_gif(path: PathLike) -> tuple[int, float | None, tuple[int, int]]:
  with _gif_open(path) as im:
    try:
      n = int(getattr(im, "n_frames", 1))
    except (OSError, ValueError, EOFError) as e:
      raise DataError(f"{path}: corrupt GIF: {e}") from e
    duration = im.info.get("duration")
    fps = 1000.0 / duration if duration else None
    return n, fps, (im.size[1], im.size[0])


def _iter_gif(path: PathLike, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
  with _gif_open(path) as im:
    for i in wanted:
      try:
        im.seek(i)
        frame = np.asarray(im.convert("RGB"))
      except EOFError:
        raise DataError(f"{path}: GIF has fewer than {i + 1} frames") from None
      except (OSError, ValueError) as e:
        raise DataError(f"{path}: corrupt GIF at frame {i}: {e}") from e
      yield i, frame


# --------------------------------------------------------------------------
# Any clip
# --------------------------------------------------------------------------


def probe_video(path: PathLike, *, frame_width: int | None = None
                ) -> tuple[int, float | None, tuple[int, int]]:
  """``(num_frames, fps, (height, width))`` of a clip, cheaply.

  Reads container headers only (frame folders: the listing and the first
  frame's header; strips: the image header). ``fps`` is ``None`` where the
  clip has no rate (frame folders, strips, ``.npy``). The frame count comes
  from the header; a truncated video can decode fewer frames (``data check``
  decodes the last frame to find out).
  """
  kind = clip_kind(path)
  if kind == "video":
    return _probe_av(path)
  if kind == "gif":
    return _probe_gif(path)
  if kind == "folder":
    names = list_frame_files(path)
    if not names:
      raise DataError(f"{path}: frame folder holds no image files "
                      f"({' '.join(IMAGE_EXTS)})")
    h, w, _ = image_header(os.path.join(path, names[0]))
    return len(names), None, (h, w)
  if kind == "strip":
    h, total_w, _ = image_header(path)
    fw = frame_width or h
    if total_w % fw:
      raise DataError(
          f"{path}: strip image is {total_w} px wide, not a multiple of the "
          f"frame width {fw}")
    return total_w // fw, None, (h, fw)
  arr = _load_npy(path)
  return arr.shape[0], None, (arr.shape[1], arr.shape[2])


def _load_npy(path: PathLike) -> np.ndarray:
  try:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read {path}: {e}") from e
  if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
    raise DataError(f"{path}: expected a (T, H, W, 3) array, got shape "
                    f"{arr.shape}")
  return arr


def _normalise_indices(path: PathLike, indices: Iterable[int]) -> list[int]:
  out = sorted({int(i) for i in indices})
  if out and out[0] < 0:
    raise DataError(f"{path}: negative frame index {out[0]}")
  return out


def iter_native_frames(path: PathLike, indices: Iterable[int] | None = None, *,
                       kind: str | None = None, frame_width: int | None = None,
                       num_frames: int | None = None
                       ) -> Iterator[tuple[int, np.ndarray]]:
  """Yields ``(index, native frame)`` in increasing index order.

  ``indices=None`` means every frame (streamed: one decoded frame in memory at
  a time for videos and folders). Native frames are as
  :func:`decode_image_bytes` returns them (videos and GIFs: uint8 RGB).
  ``num_frames`` (when known) saves a header read for ``indices=None``.
  """
  kind = kind or clip_kind(path)
  if indices is None:
    if kind == "video":
      yield from _iter_all_av(path)
      return
    if num_frames is None:
      num_frames = probe_video(path, frame_width=frame_width)[0]
    wanted = list(range(num_frames))
  else:
    wanted = _normalise_indices(path, indices)
  if kind == "video":
    yield from _iter_av(path, wanted)
  elif kind == "gif":
    yield from _iter_gif(path, wanted)
  elif kind == "folder":
    names = list_frame_files(path)
    for i in wanted:
      if i >= len(names):
        raise DataError(f"{path}: frame folder has {len(names)} frames; frame "
                        f"{i} was asked for")
      yield i, read_image_native(os.path.join(path, names[i]))
  elif kind == "strip":
    img = read_image_native(path)
    fw = frame_width or img.shape[0]
    if img.shape[1] % fw:
      raise DataError(f"{path}: strip image is {img.shape[1]} px wide, not a "
                      f"multiple of the frame width {fw}")
    n = img.shape[1] // fw
    for i in wanted:
      if i >= n:
        raise DataError(f"{path}: strip has {n} frames; frame {i} was asked for")
      yield i, np.ascontiguousarray(img[:, i * fw:(i + 1) * fw])
  elif kind == "npy":
    arr = _load_npy(path)
    for i in wanted:
      if i >= arr.shape[0]:
        raise DataError(f"{path}: array has {arr.shape[0]} frames; frame {i} "
                        f"was asked for")
      yield i, np.array(arr[i])
  else:
    raise ValueError(f"unknown clip kind {kind!r}")


def _iter_all_av(path: PathLike) -> Iterator[tuple[int, np.ndarray]]:
  import av  # pylint: disable=import-outside-toplevel
  container = _av_open(path)
  idx = -1
  try:
    stream = container.streams.video[0]
    for frame in container.decode(stream):
      idx += 1
      yield idx, frame.to_ndarray(format="rgb24")
  except (av.FFmpegError, ValueError) as e:
    raise DataError(f"{path}: decoding failed at frame {idx + 1}: {e}") from e
  finally:
    container.close()
  if idx < 0:
    raise DataError(f"{path}: video has no decodable frames")


def read_native_frames(path: PathLike, indices: Sequence[int], *,
                       kind: str | None = None,
                       frame_width: int | None = None) -> list[np.ndarray]:
  """Native frames at ``indices`` (any order, repeats allowed), as a list.

  Decodes each distinct index once, and nothing past the largest one.
  """
  got = dict(iter_native_frames(path, indices, kind=kind,
                                frame_width=frame_width))
  return [got[int(i)] for i in indices]


def read_frames(path: PathLike, indices: Sequence[int], *,
                frame_width: int | None = None) -> np.ndarray:
  """Frames ``indices`` of a clip as ``(len(indices), H, W, 3)`` float32.

  Only the frames asked for are decoded (see the module docstring).
  """
  frames = read_native_frames(path, indices, frame_width=frame_width)
  return _stack(path, [to_float_rgb(f, path) for f in frames])


def _stack(path: PathLike, frames: list[np.ndarray]) -> np.ndarray:
  if not frames:
    raise DataError(f"{path}: no frames")
  shapes = {f.shape for f in frames}
  if len(shapes) > 1:
    raise DataError(f"{path}: frames differ in size: {sorted(shapes)}")
  return np.stack(frames)


def read_video(path: PathLike, *, frame_width: int | None = None
               ) -> tuple[np.ndarray, float | None]:
  """A whole clip as ``((T, H, W, 3) float32 in [0, 1], fps)``.

  ``fps`` is ``None`` where the clip has no rate. For long videos prefer
  :func:`iter_native_frames` (streams) or :func:`read_frames`.
  """
  kind = clip_kind(path)
  fps = probe_video(path, frame_width=frame_width)[1] if kind in ("video", "gif") else None
  frames = [to_float_rgb(f, path) for _, f in
            iter_native_frames(path, None, kind=kind, frame_width=frame_width)]
  return _stack(path, frames), fps


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _to_uint8(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames
  return (np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_video(path: PathLike, frames: np.ndarray, fps: float = 25.0, *,
                crf: int = 18, gop: int | None = None,
                audio: np.ndarray | None = None,
                audio_rate: int = 16000) -> pathlib.Path:
  """Writes ``frames`` ``(T, H, W, 3)`` (float in [0, 1] or uint8).

  By the extension of ``path``:

  * ``.mp4 .mov .mkv``: H.264 (libx264, ``crf``; yuv420p, or yuv444p when a
    side is odd), ``gop`` = keyframe interval (libx264's default when None);
    with ``audio`` (mono int16 or float in [-1, 1] samples at
    ``audio_rate``) an AAC sound track muxed beside the picture;
  * ``.gif``: PIL, frame duration ``1000 / fps`` ms;
  * ``.npy``: the float32 array as given (clipped to [0, 1]);
  * no extension: a folder of lossless 7-digit PNG frames
    (``0000000.png``, ...) as FOMM's preprocessing writes.

  Returns the path written.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise DataError(f"write_video({path}): expected frames (T, H, W, 3) with "
                    f"T > 0, got shape {frames.shape}")
  p = pathlib.Path(path)
  ext = p.suffix.lower()
  if audio is not None and ext not in (".mp4", ".mov", ".mkv"):
    raise DataError(f"write_video({p}): a sound track needs an .mp4, .mov or "
                    f".mkv file, not {ext or 'a frame folder'}")
  if ext in (".mp4", ".mov", ".mkv"):
    _write_av(p, _to_uint8(frames), fps, crf, gop, audio, audio_rate)
  elif ext == ".gif":
    from PIL import Image  # pylint: disable=import-outside-toplevel
    ims = [Image.fromarray(f) for f in _to_uint8(frames)]
    p.parent.mkdir(parents=True, exist_ok=True)
    ims[0].save(p, save_all=True, append_images=ims[1:],
                duration=int(round(1000.0 / fps)), loop=0)
  elif ext == ".npy":
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else \
        np.clip(frames.astype(np.float32), 0.0, 1.0)
    np.save(p, arr)
  elif ext == "":
    import cv2  # pylint: disable=import-outside-toplevel
    p.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(_to_uint8(frames)):
      if not cv2.imwrite(str(p / f"{i:07d}.png"), np.ascontiguousarray(f[..., ::-1])):
        raise DataError(f"cannot write {p / f'{i:07d}.png'}")
  else:
    raise DataError(f"write_video({p}): unknown extension {ext!r}; use .mp4, "
                    f".mov, .mkv, .gif, .npy or no extension (PNG folder)")
  return p


def _audio_frames(samples: np.ndarray, rate: int, frame_size: int):
  """Mono samples as AAC encoder frames (float planar, ``frame_size`` each)."""
  import av  # pylint: disable=import-outside-toplevel
  x = np.asarray(samples)
  x = (x.astype(np.float32) / 32768.0 if x.dtype == np.int16
       else np.clip(x.astype(np.float32), -1.0, 1.0)).reshape(-1)
  for i in range(0, len(x), frame_size):
    chunk = x[i:i + frame_size]
    frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
    frame.sample_rate = rate
    frame.pts = i
    yield frame


def _write_av(p: pathlib.Path, frames: np.ndarray, fps: float, crf: int,
              gop: int | None, audio: np.ndarray | None = None,
              audio_rate: int = 16000) -> None:
  import av  # pylint: disable=import-outside-toplevel
  t, h, w, _ = frames.shape
  odd = h % 2 or w % 2
  if odd:
    _notice(p, f"odd frame size {h}x{w}: writing yuv444p H.264 (some players "
                "only play yuv420p)")
  p.parent.mkdir(parents=True, exist_ok=True)
  rate = fractions.Fraction(fps).limit_denominator(1001)
  try:
    with av.open(str(p), "w") as container:
      stream = container.add_stream("libx264", rate=rate)
      stream.width, stream.height = w, h
      stream.pix_fmt = "yuv444p" if odd else "yuv420p"
      opts = {"crf": str(crf)}
      if gop is not None:
        stream.codec_context.gop_size = int(gop)
        opts["sc_threshold"] = "0"
      stream.options = opts
      sound = None
      if audio is not None:
        sound = container.add_stream("aac", rate=int(audio_rate))
        sound.layout = "mono"
      for f in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)
      if sound is not None:
        size = sound.codec_context.frame_size or 1024
        for af in _audio_frames(audio, int(audio_rate), size):
          for packet in sound.encode(af):
            container.mux(packet)
        for packet in sound.encode():
          container.mux(packet)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise DataError(f"cannot write video {p}: {e}") from e
