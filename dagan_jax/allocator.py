"""The C allocator that compiled steps run with on CPU hosts.

XLA:CPU allocates a compiled program's buffers at every execution: the
temporaries of DaGAN's 256x256 training step at batch 2 are one 1.7 GB
block, and Eigen's convolutions ask for packing buffers of 60-300 MB each
(about 7 GB in 80 requests per step). glibc's ``malloc`` serves requests of
more than 64 MB from XLA's worker threads with a fresh ``mmap`` and returns
them with ``munmap``, so every step faults its working set in again: about
410k page faults and 3 s of system time per step on the 2-core development
machine (BENCHMARKS.md, eighth round). An allocator that keeps freed memory
mapped avoids that:

* ``jemalloc`` with page purging off (``MALLOC_CONF=dirty_decay_ms:-1,
  muzzy_decay_ms:-1``): no page faults in the steady state; the training
  step at batch 2 went 11.9 -> 9.9 s and 12.5 -> 10.9 s in two same-time
  A/B runs (the official PyTorch step gains more from it: 15.9 -> 11.9 s and
  16.5 -> 11.8 s);
* ``tcmalloc`` (gperftools), preloaded the same way with
  ``TCMALLOC_RELEASE_RATE=0``: the same (9.7-10.1 s per step);
* glibc's transparent huge pages for its ``mmap``-ed chunks
  (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc 2.35 or newer, kernel
  THP mode ``madvise`` or ``always``): 500x fewer faults, but every page is
  still zeroed at every step; 11.25 -> 11.13 s, within the noise, so it is
  only used when asked for.

* ``mimalloc`` (Microsoft), preloaded with ``MIMALLOC_PURGE_DELAY=-1``
  (freed memory is never returned): no page faults either, but its worker
  threads wait on each other (about 1.5 s of system time per step, all in
  ``futex``), so it comes after the other two. It needs no system package:
  ``pip install cmeel-mimalloc`` puts ``libmimalloc.so.3`` in the Python
  environment, where :func:`wheel_dirs` finds it.

An allocator can only be chosen before a process starts, so it is a
matter of how a command is launched, not of the command: this module is
also a launcher that starts any command with the chosen environment,

    python -m dagan_jax.allocator dagan-jax train --config ... --workdir ...

(:func:`main`; ``scripts/with-allocator`` is the same as a script), and the
training log says which allocator runs (:func:`status_line`).
``DAGAN_JAX_ALLOCATOR`` (read by the launcher and the benchmarks only)
picks: ``auto`` (default: jemalloc, else tcmalloc, else mimalloc, else
glibc's ``malloc`` as it is), ``jemalloc``, ``tcmalloc``, ``mimalloc``,
``glibc-thp``, or ``system`` (leave the process as started). A library that is already preloaded, or glibc tunables already
set for ``malloc``, are left alone. ``DAGAN_JAX_MALLOC_LIB`` names the
jemalloc, tcmalloc or mimalloc shared library where it is not in a standard place
(``apt install libjemalloc2``, ``conda install jemalloc``).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import sysconfig
from typing import Mapping, Sequence

#: Environment variable choosing the allocator (see the module doc).
ENV = "DAGAN_JAX_ALLOCATOR"
#: Environment variable naming a jemalloc / tcmalloc library to preload.
LIB_ENV = "DAGAN_JAX_MALLOC_LIB"
#: Set by the launcher in the command's environment, to the choice made.
APPLIED_ENV = "DAGAN_JAX_ALLOCATOR_APPLIED"

CHOICES = ("auto", "jemalloc", "tcmalloc", "mimalloc", "glibc-thp", "system")

#: The process environment variables that decide the C allocator.
ENV_VARS = ("LD_PRELOAD", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE",
            "MIMALLOC_PURGE_DELAY", "GLIBC_TUNABLES")

_SONAMES = {"jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
            "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4",
                         "libtcmalloc_minimal.so", "libtcmalloc.so"),
            "mimalloc": ("libmimalloc.so.3", "libmimalloc.so.2", "libmimalloc.so")}
_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
         "/usr/lib", "/usr/local/lib", "/opt/homebrew/lib")
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"
#: The allocators ``auto`` tries, in order.
AUTO_ORDER = ("jemalloc", "tcmalloc", "mimalloc")


class AllocatorError(ValueError):
  """A bad ``DAGAN_JAX_ALLOCATOR`` / ``DAGAN_JAX_MALLOC_LIB`` setting."""


def _kind_of(path: str) -> str | None:
  name = os.path.basename(path)
  for kind in _SONAMES:
    if name.startswith("lib" + kind):
      return kind
  return None


def wheel_dirs() -> list[str]:
  """Library directories of allocator wheels in this Python environment:
  ``pip install cmeel-mimalloc`` puts ``libmimalloc.so.3`` under
  ``site-packages/cmeel.prefix/lib``."""
  out = []
  for key in ("purelib", "platlib"):
    d = os.path.join(sysconfig.get_paths()[key], "cmeel.prefix", "lib")
    if d not in out:
      out.append(d)
  return out


def find_library(kind: str, environ: Mapping[str, str] | None = None,
                 dirs: Sequence[str] | None = None) -> str | None:
  """The path of a ``kind`` ('jemalloc', 'tcmalloc' or 'mimalloc') shared
  library, or None: ``DAGAN_JAX_MALLOC_LIB`` when it names one of that
  kind, else the first of its usual names in this environment's allocator
  wheels (:func:`wheel_dirs`), the Python prefix's ``lib`` (conda), the
  system's library directories, or the linker's cache."""
  environ = os.environ if environ is None else environ
  explicit = environ.get(LIB_ENV)
  if explicit:
    if not os.path.isfile(explicit):
      raise AllocatorError(f"{LIB_ENV}={explicit!r}: no such file")
    if _kind_of(explicit) is None:
      raise AllocatorError(f"{LIB_ENV}={explicit!r}: not a jemalloc, tcmalloc or "
                           "mimalloc library (libjemalloc*.so*, libtcmalloc*.so*, "
                           "libmimalloc*.so*)")
    return explicit if _kind_of(explicit) == kind else None
  search = list(dirs) if dirs is not None else [*wheel_dirs(),
                                                 os.path.join(sys.prefix, "lib"), *_DIRS]
  for soname in _SONAMES[kind]:
    for d in search:
      path = os.path.join(d, soname)
      if os.path.isfile(path):
        return path
  if dirs is None:
    name = ctypes.util.find_library(kind) or ctypes.util.find_library(
        kind + "_minimal")
    if name:
      for d in search:
        if os.path.isfile(os.path.join(d, name)):
          return os.path.join(d, name)
  return None


def glibc_version() -> tuple[int, int] | None:
  """glibc's (major, minor), or None on another C library."""
  try:
    text = os.confstr("CS_GNU_LIBC_VERSION") or ""
  except (ValueError, OSError, AttributeError):
    return None
  parts = text.split()
  if len(parts) != 2 or parts[0] != "glibc":
    return None
  try:
    major, minor = (int(v) for v in parts[1].split(".")[:2])
  except ValueError:
    return None
  return major, minor


def thp_mode(path: str = _THP) -> str | None:
  """The kernel's transparent-huge-page mode ('always', 'madvise', 'never')."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def _already_set(environ: Mapping[str, str]) -> str | None:
  """What the user already chose for the allocator, if anything."""
  for entry in environ.get("LD_PRELOAD", "").replace(":", " ").split():
    if _kind_of(entry) or "malloc" in os.path.basename(entry):
      return f"LD_PRELOAD={entry}"
  if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
    return f"GLIBC_TUNABLES={environ['GLIBC_TUNABLES']}"
  return None


def allocator_env(environ: Mapping[str, str] | None = None, choice: str | None = None,
                  *, glibc: tuple[int, int] | None | str = "detect",
                  thp: str | None = "detect",
                  dirs: Sequence[str] | None = None) -> tuple[str, dict[str, str]]:
  """``(description, variables)``: what to add to ``environ`` for the chosen
  allocator (``choice``, default ``$DAGAN_JAX_ALLOCATOR`` or 'auto').
  ``variables`` is empty when nothing is to change. ``glibc``, ``thp`` and
  ``dirs`` replace what is detected on this machine (for tests).

  Raises:
    AllocatorError: an unknown choice, or a named allocator that cannot be
      had here.
  """
  environ = os.environ if environ is None else environ
  choice = (choice or environ.get(ENV) or "auto").strip().lower()
  if choice not in CHOICES:
    raise AllocatorError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
  if choice == "system":
    return "system (as started)", {}
  if choice == "auto":
    user = _already_set(environ)
    if user:
      return f"as set ({user})", {}
  glibc = glibc_version() if glibc == "detect" else glibc
  thp = thp_mode() if thp == "detect" else thp
  for kind in AUTO_ORDER:
    if choice not in ("auto", kind):
      continue
    path = find_library(kind, environ, dirs)
    if path is None:
      if choice == kind:
        raise AllocatorError(f"{ENV}={kind}: no {kind} library found; install it "
                             f"(e.g. apt install lib{kind}...) or name it with {LIB_ENV}")
      continue
    preload = " ".join(p for p in (path, environ.get("LD_PRELOAD", "")) if p)
    out = {"LD_PRELOAD": preload}
    if kind == "jemalloc" and "MALLOC_CONF" not in environ:
      out["MALLOC_CONF"] = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    if kind == "tcmalloc" and "TCMALLOC_RELEASE_RATE" not in environ:
      out["TCMALLOC_RELEASE_RATE"] = "0"
    if kind == "mimalloc" and "MIMALLOC_PURGE_DELAY" not in environ:
      out["MIMALLOC_PURGE_DELAY"] = "-1"
    return f"{kind} ({path})", out
  if choice == "auto":
    return "system (no jemalloc, tcmalloc or mimalloc found)", {}
  # glibc's transparent huge pages for mmap-ed chunks, when asked for.
  usable = glibc is not None and glibc >= (2, 35) and thp in ("madvise", "always")
  if not usable:
    raise AllocatorError(
          f"{ENV}=glibc-thp needs glibc 2.35 or newer (here: "
          f"{'%d.%d' % glibc if glibc else 'not glibc'}) and transparent huge "
          f"pages in 'madvise' or 'always' mode (here: {thp or 'unknown'})")
  tunables = environ.get("GLIBC_TUNABLES", "")
  tunables = "glibc.malloc.hugetlb=1" + (":" + tunables if tunables else "")
  return "glibc with transparent huge pages (glibc.malloc.hugetlb=1)", {
      "GLIBC_TUNABLES": tunables}


def launch_env(environ: Mapping[str, str] | None = None,
               choice: str | None = None) -> tuple[str, dict[str, str]]:
  """(description, the whole environment) to start a command with the
  allocator of ``choice`` (default: ``DAGAN_JAX_ALLOCATOR`` or ``auto``).

  Raises:
    AllocatorError: a bad setting (see :func:`allocator_env`).
  """
  environ = dict(os.environ if environ is None else environ)
  description, variables = allocator_env(environ, choice)
  if not variables:
    return description, environ
  return description, {**environ, **variables, APPLIED_ENV: description}


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m dagan_jax.allocator [--allocator CHOICE] COMMAND [ARGS...]``:
  runs COMMAND in place of this process, with the chosen C allocator."""
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
      prog="python -m dagan_jax.allocator",
      description="Run a command with a C allocator that keeps freed memory "
                  "mapped (faster XLA:CPU steps; see dagan_jax/allocator.py).")
  parser.add_argument("--allocator", choices=CHOICES, default=None,
                      help=f"default: ${ENV} or auto")
  parser.add_argument("command", nargs=argparse.REMAINDER,
                      help="the command and its arguments")
  args = parser.parse_args(argv)
  if not args.command:
    parser.error("no command given")
  try:
    description, env = launch_env(choice=args.allocator)
  except AllocatorError as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  print(f"C allocator: {description}", file=sys.stderr, flush=True)
  try:
    os.execvpe(args.command[0], args.command, env)
  except OSError as e:
    print(f"{parser.prog}: error: cannot run {args.command[0]!r}: {e}",
          file=sys.stderr)
    return 127
  return 0  # not reached: execvpe replaces this process


def status_line(environ: Mapping[str, str] | None = None) -> str:
  """One line saying which C allocator this process runs with (for logs),
  with a hint where it is glibc's ``malloc`` left as it is."""
  environ = os.environ if environ is None else environ
  applied = environ.get(APPLIED_ENV)
  if applied:
    return f"C allocator: {applied}"
  user = _already_set(environ)
  if user:
    return f"C allocator: as set ({user})"
  return ("C allocator: the C library's malloc; on CPU hosts jemalloc, tcmalloc or "
          "mimalloc makes steps faster (apt install libjemalloc2, or pip install "
          "cmeel-mimalloc; then launch with python -m dagan_jax.allocator "
          "dagan-jax ...)")


if __name__ == "__main__":
  sys.exit(main())
