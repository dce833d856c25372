"""Dataset layouts, clip tables and the cached clip-metadata index.

Layouts (``dataset_params.layout``)
-----------------------------------
``'vox'``
    VoxCeleb as FOMM's video-preprocessing writes it: ``root/{train,test}/``
    holding one entry per clip named ``<person>#<video>#<start>#<end>.mp4``,
    each a video file, a folder of frames, or a strip image (any clip kind of
    :mod:`dagan_jax.input.media`). The person is the text before the first
    ``#`` (FOMM's ``id_sampling`` key).
``'hdtf'``
    HDTF frame folders ``root/{train,test}/<Name>.mp4/<6-digit>.jpg``. The
    person is the name without its extension and without a trailing
    ``_<digits>`` (``WDA_BarackObama_000.mp4`` -> ``WDA_BarackObama``).
``'lrs2'``
    LRS2 (BBC lip reading): clips ``root/main/<id>/<n>.mp4`` (160x160 face
    crops, 25 fps, the speech in the mp4's own AAC stream) and
    ``root/pretrain/<id>/<n>.mp4``. The clips are not sorted into split
    folders: split ``s`` is the list ``root/filelists/<s>.txt`` (``train``,
    ``val``, ``test``, ``pretrain``), one clip ``<id>/<n>`` per line as its
    first whitespace-separated token (``test.txt`` lines add tags such as
    ``NF``, which are ignored; so are blank lines). ``pretrain`` lists clips
    under ``pretrain/``, every other split clips under ``main/``, which is
    the split's :attr:`ClipIndex.split_dir`; clip names are ``<id>/<n>.mp4``
    relative to it. The person is ``<id>``: LRS2's id is a programme, not a
    speaker (LRS2 does not name its speakers), and a programme is the closest
    grouping of one face that the dataset has.

``'vox'`` and ``'hdtf'`` are scanned the same way, by listing the split folder;
they differ in the person key and in the default frame size (256 and 512).
Entries whose names start with ``.`` are ignored; any other entry that is not
a clip is reported as bad. ``'lrs2'`` reads the split's filelist instead and
stats each listed file; a listed clip whose file is missing is reported as bad
(with the filelist's line), not raised, so that one lost file does not stop a
run that skips bad clips. Each layout's splits, for tools that check a whole
dataset, are :data:`DEFAULT_SPLITS`.

Index cache
-----------
Probing a clip (container header, or listing a frame folder and reading the
first frame's header) costs about 1-3 ms; for 100k clips that is minutes. The
results are kept in one JSON file per split directory::

    <cache_dir>/<sha1(abs split dir[, abs filelist])[:16]>-<split>.json
    {"format": 1, "split_dir": ..., "filelist": ..., "frame_width": ...,
     "clips": {name: [kind, num_frames, height, width, fps, mode,
                      mtime_ns, size, error]}}

(The filelist, LRS2's, is part of the key: its splits share one clip folder,
and a ``'vox'`` scan of that folder must not overwrite their files either.)

An entry is reused while the entry's ``(mtime_ns, size)`` from ``os.scandir``
(``os.stat`` for LRS2) is unchanged (a frame folder's mtime changes when
frames are added, removed or renamed), so a start-up over a cached split
costs one directory listing, one ``stat`` per clip and one JSON parse:
1.1-2.6 s for a synthetic 100k-clip split on the loaded 2-core development
machine (:mod:`.benchmark`). Bad clips are cached with their error. The cache
directory is ``dataset_params.cache_dir`` if set, else ``$DAGAN_JAX_CACHE``,
else ``$XDG_CACHE_HOME/dagan_jax/clip_index`` (``~/.cache/...``). Not the data
folder: datasets are often read-only or shared. Files are written atomically
(temp file + rename), so hosts sharing a cache directory do not corrupt it;
point ``cache_dir`` at shared storage (or run ``dagan-jax data check`` once)
so that hosts do not each probe the whole dataset. An unwritable cache
directory only costs speed (one logged warning).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import tempfile
import time
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from dagan_jax.errors import ConfigError, DataError
from dagan_jax.input import media

log = logging.getLogger("dagan_jax.input")

LAYOUTS = ("vox", "hdtf", "lrs2")
#: The splits of each layout (``dagan-jax data check --split all``). LRS2's
#: ``pretrain`` is left out: its longer clips are for pre-training only, read
#: on request.
DEFAULT_SPLITS = {"vox": ("train", "test"), "hdtf": ("train", "test"),
                  "lrs2": ("train", "val", "test")}
#: Extensions of sound files, which a split folder may hold beside its clips.
SOUND_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg")

DEFAULT_FRAME_SHAPE = {"vox": (256, 256, 3), "hdtf": (512, 512, 3),
                       "lrs2": (160, 160, 3)}
INDEX_FORMAT = 1
PROBE_THREADS = 8


class ClipInfo(NamedTuple):
  """Metadata of one clip (a row of the clip table).

  ``mode`` is the PIL mode of the first frame for image-based clips
  (``'RGB'``, ``'L'``, ``'RGBA'``, ``'I;16'``, ...) and ``'RGB'`` for videos,
  which always decode to RGB.
  """
  name: str
  person: str
  kind: str
  num_frames: int
  height: int
  width: int
  fps: float | None
  mode: str


class BadClip(NamedTuple):
  """A clip that cannot be used, and why (``path``: the file to look at)."""
  path: str
  reason: str


def _vox_person(name: str) -> str:
  return name.partition("#")[0]


_HDTF_TAIL = re.compile(r"(_\d+)?(\.[A-Za-z0-9]+)?$")


def _hdtf_person(name: str) -> str:
  return _HDTF_TAIL.sub("", name, count=1)


def _lrs2_person(name: str) -> str:
  # Names are built from filelist tokens, which always use "/".
  return name.partition("/")[0]


_PERSON_FNS = {"vox": _vox_person, "hdtf": _hdtf_person, "lrs2": _lrs2_person}


def person_of(name: str, layout: str) -> str:
  """The identity key of a clip name (see the module docstring)."""
  try:
    return _PERSON_FNS[layout](name)
  except KeyError:
    raise ConfigError(f"dataset layout {layout!r}; expected one of "
                      f"{LAYOUTS}") from None


def default_cache_dir() -> pathlib.Path:
  """``$DAGAN_JAX_CACHE`` or ``$XDG_CACHE_HOME/dagan_jax/clip_index``."""
  env = os.environ.get("DAGAN_JAX_CACHE")
  if env:
    return pathlib.Path(env)
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "dagan_jax" / "clip_index"


def split_dir(root: str | os.PathLike, split: str,
              layout: str = "vox") -> pathlib.Path:
  """The folder a split's clip names are relative to: ``root/split``, for
  ``'lrs2'`` ``root/main`` (``root/pretrain`` for its ``pretrain`` split); or
  a :class:`DataError` saying what is missing."""
  root_p = pathlib.Path(root)
  if not str(root):
    raise ConfigError("dataset_params.root_dir is empty; set it to the folder "
                      "holding train/ and test/")
  if not root_p.is_dir():
    raise DataError(f"dataset root {root_p} does not exist or is not a folder")
  if layout == "lrs2":
    d = root_p / ("pretrain" if split == "pretrain" else "main")
  else:
    d = root_p / split
  if not d.is_dir():
    present = sorted(p.name for p in root_p.iterdir() if p.is_dir())
    if layout == "lrs2":
      raise DataError(
          f"clip folder {d} not found (an LRS2 root holds main/ and pretrain/ "
          f"with clips <id>/<n>.mp4, and filelists/; {root_p} has folders "
          f"{present})")
    raise DataError(
        f"split folder {d} not found (a dataset root holds train/ and test/ "
        f"with one entry per clip; {root_p} has folders {present})")
  return d


def filelist_path(root: str | os.PathLike, split: str) -> pathlib.Path:
  """``root/filelists/<split>.txt``: the clips of an LRS2 split."""
  return pathlib.Path(root) / "filelists" / f"{split}.txt"


def split_listing(root: str | os.PathLike, split: str,
                  layout: str = "vox") -> pathlib.Path:
  """What says which clips a split holds, to name in reports: the split
  folder, or for ``'lrs2'`` the split's filelist."""
  if layout == "lrs2":
    return filelist_path(root, split)
  return pathlib.Path(root) / split


@dataclasses.dataclass
class ClipIndex:
  """The usable clips of one split, sorted by name, and the bad ones.

  ``clips[i]`` is clip id ``i``; ``path(i)`` its file or folder. ``bad`` lists
  entries that cannot be read at all (and, after :meth:`select`, clips that do
  not fit a request). ``stats`` says how the index was made: ``cached``,
  ``probed``, ``seconds``.
  """
  split_dir: pathlib.Path
  layout: str
  clips: list[ClipInfo]
  bad: list[BadClip]
  stats: dict[str, Any]
  frame_width: int | None = None

  def path(self, clip_id: int) -> str:
    return os.path.join(self.split_dir, self.clips[clip_id].name)

  @property
  def persons(self) -> list[str]:
    return sorted({c.person for c in self.clips})

  @property
  def num_frames(self) -> int:
    return sum(c.num_frames for c in self.clips)

  def select(self, *, min_frames: int = 1,
             frame_hw: Sequence[int] | None = None,
             require_rgb: bool = True) -> "ClipIndex":
    """The clips that can give a record; the others join ``bad``.

    ``min_frames``: frames a record needs; ``frame_hw``: required
    ``(height, width)`` (None: any size); ``require_rgb``: frames must be
    3-channel 8-bit (image folders and strips are checked on the first
    frame's mode, palette images allowed; every decoded frame is checked
    again when read).
    """
    keep, bad = [], list(self.bad)
    for i, c in enumerate(self.clips):
      why = clip_problem(c, min_frames=min_frames, frame_hw=frame_hw,
                         require_rgb=require_rgb)
      if why:
        bad.append(BadClip(self.path(i), why))
      else:
        keep.append(c)
    return dataclasses.replace(self, clips=keep, bad=bad)


def clip_problem(c: ClipInfo, *, min_frames: int = 1,
                 frame_hw: Sequence[int] | None = None,
                 require_rgb: bool = True) -> str | None:
  """Why clip ``c`` cannot give a record, or None."""
  if c.num_frames < min_frames:
    return (f"has {c.num_frames} frame{'s' if c.num_frames != 1 else ''}; a "
            f"record needs at least {min_frames}")
  if frame_hw is not None and (c.height, c.width) != tuple(frame_hw):
    return (f"frames are {c.height}x{c.width}; dataset_params.frame_shape asks "
            f"for {frame_hw[0]}x{frame_hw[1]} (set dataset_params.resize_frames "
            f"to resize)")
  if require_rgb and c.mode not in ("RGB", "P"):
    return f"frames are {_describe_mode(c.mode)}; expected 8-bit RGB"
  return None


def _describe_mode(mode: str) -> str:
  return {"L": "greyscale (1 channel)", "LA": "greyscale+alpha (2 channels)",
          "RGBA": "RGBA (4 channels)", "P": "palette images",
          "I;16": "16-bit greyscale", "I": "32-bit integer",
          "CMYK": "CMYK (4 channels)", "1": "1-bit"}.get(mode, f"mode {mode}")


def _probe_entry(path: str, frame_width: int | None) -> tuple:
  """``(kind, n, h, w, fps, mode, error)`` for one split entry."""
  try:
    kind = media.clip_kind(path)
    n, fps, (h, w) = media.probe_video(path, frame_width=frame_width)
    mode = "RGB"
    if kind == "folder":
      first = media.list_frame_files(path)[0]
      mode = media.image_header(os.path.join(path, first))[2]
    elif kind == "strip":
      mode = media.image_header(path)[2]
    if n <= 0:
      raise DataError(f"{path}: has no frames")
    return (kind, int(n), int(h), int(w), fps, mode, None)
  except DataError as e:
    return (None, 0, 0, 0, None, None, str(e))


def _cache_file(cache_dir: pathlib.Path, sdir: pathlib.Path, split: str,
                filelist: pathlib.Path | None = None) -> pathlib.Path:
  key = str(sdir.resolve())
  if filelist is not None:
    # Without a filelist the key stays the folder alone, so that caches
    # written before filelists existed are still found.
    key += "\n" + str(filelist.resolve())
  digest = hashlib.sha1(key.encode()).hexdigest()[:16]
  return cache_dir / f"{digest}-{split}.json"


def _read_cache(path: pathlib.Path, sdir: pathlib.Path,
                frame_width: int | None,
                filelist: pathlib.Path | None = None) -> dict[str, list]:
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    log.warning("ignoring unreadable clip index %s: %s", path, e)
    return {}
  if (not isinstance(data, dict) or data.get("format") != INDEX_FORMAT
      or data.get("split_dir") != str(sdir.resolve())
      or data.get("frame_width") != frame_width
      or data.get("filelist") != (None if filelist is None
                                  else str(filelist.resolve()))):
    return {}
  clips = data.get("clips")
  return clips if isinstance(clips, dict) else {}


_unwritable_warned: set[str] = set()


def _write_cache(path: pathlib.Path, sdir: pathlib.Path, frame_width: int | None,
                 clips: Mapping[str, list],
                 filelist: pathlib.Path | None = None) -> None:
  data = {"format": INDEX_FORMAT, "split_dir": str(sdir.resolve()),
          "filelist": None if filelist is None else str(filelist.resolve()),
          "frame_width": frame_width, "clips": clips}
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
      with os.fdopen(fd, "w") as f:
        json.dump(data, f, separators=(",", ":"))
      os.replace(tmp, path)
    except BaseException:
      os.unlink(tmp)
      raise
  except OSError as e:
    if str(path.parent) not in _unwritable_warned:
      _unwritable_warned.add(str(path.parent))
      log.warning("cannot write the clip index %s (%s); start-up will probe "
                  "clips again next time", path, e)


def _folder_entries(sdir: pathlib.Path) -> dict[str, tuple[int, int]]:
  """``{name: (mtime_ns, size)}`` of the clips in a split folder."""
  entries: dict[str, tuple[int, int]] = {}
  try:
    with os.scandir(sdir) as it:
      for e in it:
        # Hidden files, and the sound files beside clips (a clip's speech
        # as a sidecar <clip>.wav, dagan_jax.audio.sources): not clips.
        if (e.name.startswith(".")
            or os.path.splitext(e.name)[1].lower() in SOUND_EXTS):
          continue
        try:
          st = e.stat()
        except OSError as err:
          entries[e.name] = (-1, -1)
          log.warning("cannot stat %s: %s", e.path, err)
          continue
        entries[e.name] = (st.st_mtime_ns, st.st_size)
  except OSError as e:
    raise DataError(f"cannot list split folder {sdir}: {e.strerror or e}") from e
  if not entries:
    raise DataError(f"split folder {sdir} is empty (expected one entry per clip)")
  return entries


def _filelist_entries(flist: pathlib.Path, sdir: pathlib.Path, split: str
                      ) -> tuple[dict[str, tuple[int, int]], list[BadClip]]:
  """``{name: (mtime_ns, size)}`` of the clips an LRS2 filelist names that
  exist, and a :class:`BadClip` for each one that does not."""
  try:
    with open(flist, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    fdir = flist.parent
    held = (f"{fdir} holds {sorted(p.name for p in fdir.iterdir())}"
            if fdir.is_dir() else f"{fdir} does not exist")
    raise DataError(f"{flist} not found: no filelist for LRS2 split "
                    f"{split!r} ({held})") from None
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"cannot read filelist {flist}: {e}") from e
  entries: dict[str, tuple[int, int]] = {}
  bad: list[BadClip] = []
  seen: set[str] = set()
  for lineno, line in enumerate(lines, 1):
    fields = line.split()
    if not fields:
      continue
    token = fields[0]
    name = token if token.lower().endswith(".mp4") else token + ".mp4"
    if name in seen:  # Listed twice is still one clip, not twice the weight.
      continue
    seen.add(name)
    if os.path.isabs(token) or ".." in token.split("/"):
      # A name outside the clip folder would read some other file.
      bad.append(BadClip(str(flist), f"line {lineno}: {token!r} is not a "
                                     f"clip <id>/<n> inside {sdir}"))
      continue
    path = os.path.join(sdir, name)
    try:
      st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
      bad.append(BadClip(path, f"not found (listed on line {lineno} of "
                               f"{flist})"))
      continue
    except OSError as err:
      # Probed anyway, so that the probe's error names the file.
      entries[name] = (-1, -1)
      log.warning("cannot stat %s: %s", path, err)
      continue
    entries[name] = (st.st_mtime_ns, st.st_size)
  if not seen:
    raise DataError(f"filelist {flist} lists no clips (expected one <id>/<n> "
                    f"per line)")
  return entries, bad


def scan_split(root: str | os.PathLike, split: str, layout: str = "vox", *,
               cache_dir: str | os.PathLike | None = None,
               use_cache: bool = True, frame_width: int | None = None,
               threads: int = PROBE_THREADS) -> ClipIndex:
  """Lists and probes the clips of a split, through the index cache.

  The split is the folder ``root/split``, or for ``'lrs2'`` the clips that
  ``root/filelists/<split>.txt`` names (see the module docstring).
  ``use_cache=False`` re-probes every clip (and refreshes the cache).
  Raises :class:`DataError` if the split folder (or filelist) is missing or
  holds no entries; unreadable entries, and clips a filelist names that do
  not exist, are returned in ``bad``, not raised. ``frame_width`` is the
  frame width of strip images (default: their height).
  """
  t0 = time.perf_counter()
  if layout not in LAYOUTS:
    raise ConfigError(f"dataset layout {layout!r}; expected one of {LAYOUTS}")
  sdir = split_dir(root, split, layout)
  filelist = None
  bad: list[BadClip] = []
  if layout == "lrs2":
    filelist = filelist_path(root, split)
    entries, bad = _filelist_entries(filelist, sdir, split)
  else:
    entries = _folder_entries(sdir)

  cdir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  cfile = _cache_file(cdir, sdir, split, filelist)
  cached = _read_cache(cfile, sdir, frame_width, filelist) if use_cache else {}
  rows: dict[str, list] = {}
  to_probe = []
  for name, (mtime, size) in entries.items():
    row = cached.get(name)
    if (row is not None and len(row) == 9 and row[6] == mtime and row[7] == size
        and mtime >= 0):
      rows[name] = row
    else:
      to_probe.append(name)
  if to_probe:
    paths = [os.path.join(sdir, n) for n in to_probe]
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
      results = list(pool.map(lambda p: _probe_entry(p, frame_width), paths))
    for name, res in zip(to_probe, results):
      mtime, size = entries[name]
      rows[name] = list(res[:6]) + [mtime, size, res[6]]
  if to_probe or len(cached) != len(rows):
    _write_cache(cfile, sdir, frame_width, rows, filelist)

  clips = []
  person = _PERSON_FNS[layout]
  make = ClipInfo._make
  for name in sorted(rows):
    kind, n, h, w, fps, mode, _, _, err = rows[name]
    if err:
      bad.append(BadClip(os.path.join(sdir, name), err))
    else:
      clips.append(make((name, person(name), kind, n, h, w, fps, mode)))
  bad.sort()
  stats = {"cached": len(rows) - len(to_probe), "probed": len(to_probe),
           "seconds": time.perf_counter() - t0, "cache_file": str(cfile)}
  if filelist is not None:
    stats["filelist"] = str(filelist)
  return ClipIndex(sdir, layout, clips, bad, stats, frame_width)


def group_clips(clips: Sequence[ClipInfo], id_sampling: bool) -> list[list[int]]:
  """Groups of clip ids a record draws from: one per person (sorted by
  person) when ``id_sampling``, as FOMM does, else one per clip."""
  if not id_sampling:
    return [[i] for i in range(len(clips))]
  by_person: dict[str, list[int]] = {}
  for i, c in enumerate(clips):
    by_person.setdefault(c.person, []).append(i)
  return [by_person[p] for p in sorted(by_person)]


def format_bad(bad: Iterable[BadClip], limit: int = 20) -> str:
  """Bad clips as lines ``path: reason`` (at most ``limit``, then a count)."""
  bad = list(bad)
  lines = [f"  {b.reason}" if b.reason.startswith(b.path) else
           f"  {b.path}: {b.reason}" for b in bad[:limit]]
  if len(bad) > limit:
    lines.append(f"  ... and {len(bad) - limit} more")
  return "\n".join(lines)

