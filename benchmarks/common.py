"""Helpers shared by the benchmark rows: timing, machine facts, weights.

Timing rules (see ``BENCHMARKS.md``): a compiled function is called once to
warm up, then repeatedly with ``jax.block_until_ready``; each row reports the
median and the minimum over the calls, with the load average
(``os.getloadavg()``) read before and after, because the machines this runs
on are shared. Compile time is always measured apart (``lower`` +
``compile``), never inside a steady-state figure.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import resource
import statistics
import subprocess
import time
from typing import Any, Callable, Mapping

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loadavg() -> list[float]:
  """1, 5 and 15 minute load averages of the machine."""
  return [round(v, 2) for v in os.getloadavg()]


def peak_rss_bytes() -> int:
  """Peak resident set size of this process so far (``ru_maxrss``)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def mem_available_bytes() -> int | None:
  """``MemAvailable`` of ``/proc/meminfo`` (None where there is none)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def mem_total_bytes() -> int | None:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError):
    return None


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
  """The vector extensions that matter for these kernels (AVX2, AVX-512,
  AVX512-BF16, AMX), from ``/proc/cpuinfo``."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = line.split(":", 1)[1].split()
          keep = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                  "amx_bf16", "amx_tile")
          return [fl for fl in keep if fl in flags]
  except OSError:
    pass
  return []


def git_commit() -> str:
  try:
    out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=10, check=False)
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain",
                            "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def machine_info() -> dict[str, Any]:
  """What ran the benchmark: CPU, cores, memory, versions, date, commit."""
  import flax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
      "host": platform.node(),
      "cpu": cpu_model(),
      "cpu_flags": cpu_flags(),
      "cpu_count": os.cpu_count(),
      "mem_total_bytes": mem_total_bytes(),
      "device": f"{devices[0].platform}:{getattr(devices[0], 'device_kind', '')}",
      "num_devices": len(devices),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "numpy": np.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "commit": git_commit(),
      "loadavg": loadavg(),
  }


def time_calls(fn: Callable[[], Any], *, min_calls: int = 3,
               max_calls: int = 20, min_seconds: float = 5.0,
               max_seconds: float = 120.0) -> dict[str, Any]:
  """Steady-state timing of ``fn`` (which must block until its result is
  ready): one warm-up call, then calls until ``min_calls`` are done and
  ``min_seconds`` have passed (stopping at ``max_calls`` or once
  ``max_seconds`` are spent, but never below 2 calls).

  Returns ``{'warmup_s', 'times_s', 'median_s', 'min_s', 'loadavg_before',
  'loadavg_after'}``.
  """
  before = loadavg()
  t = time.perf_counter()
  fn()
  warmup = time.perf_counter() - t
  times: list[float] = []
  start = time.perf_counter()
  while True:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
    spent = time.perf_counter() - start
    if len(times) >= max_calls:
      break
    if len(times) >= 2 and spent + times[-1] > max_seconds:
      break
    if len(times) >= min_calls and spent >= min_seconds:
      break
  return {"warmup_s": warmup, "times_s": times,
          "median_s": statistics.median(times), "min_s": min(times),
          "loadavg_before": before, "loadavg_after": loadavg()}


def compiled_cost(compiled: Any) -> dict[str, Any]:
  """FLOPs (XLA's ``cost_analysis``) and bytes (``memory_analysis``) of a
  ``jax.stages.Compiled``: ``peak`` = arguments + outputs + temporaries -
  aliased (donated) bytes, what one device needs to run it."""
  out: dict[str, Any] = {}
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if cost:
    if "flops" in cost:
      out["flops"] = float(cost["flops"])
    if "bytes accessed" in cost:
      out["bytes_accessed"] = float(cost["bytes accessed"])
  ma = compiled.memory_analysis()
  if ma is not None:
    arg, outp = ma.argument_size_in_bytes, ma.output_size_in_bytes
    temp, alias = ma.temp_size_in_bytes, ma.alias_size_in_bytes
    out.update({"argument_bytes": arg, "output_bytes": outp, "temp_bytes": temp,
                "alias_bytes": alias, "peak_bytes": arg + outp + temp - alias})
  return out


def fits_in_memory(peak_bytes: float | None, margin: float = 0.85
                   ) -> tuple[bool, str]:
  """Whether a program needing ``peak_bytes`` can run now: at most
  ``margin`` of ``MemAvailable``. Returns ``(ok, reason)``."""
  avail = mem_available_bytes()
  if peak_bytes is None or avail is None:
    return True, ""
  if peak_bytes > margin * avail:
    return False, (f"needs {human_bytes(peak_bytes)} (XLA memory_analysis) but "
                   f"only {human_bytes(avail)} is available "
                   f"(limit {int(margin * 100)}%)")
  return True, ""


def human_bytes(n: float | None) -> str:
  if n is None:
    return "-"
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(n) < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} TiB"


def random_variables(abstract: Any, seed: int = 0) -> Any:
  """Random arrays in the shapes of ``abstract`` (a pytree of
  ``ShapeDtypeStruct`` from ``build.abstract_variables``), drawn with numpy
  (no compile): conv kernels U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch
  initialises them, biases U(-0.05, 0.05), norm scales 1 + 0.1 N, running
  means 0.1 N, running variances exp(0.2 N), spectral-norm vectors unit
  norm, DaGAN's attention ``gamma`` 0.5 (so the attention counts).

  The weights change no cost (shapes decide FLOPs and memory); they keep
  the activations in a normal floating-point range (no denormals, no
  overflow) so that timings are those of real inputs.
  """
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
    if not np.issubdtype(dtype, np.floating):
      return np.zeros(shape, dtype)
    if name == "kernel" and len(shape) >= 2:
      bound = 1.0 / math.sqrt(max(int(np.prod(shape[:-1])), 1))
      a = rng.uniform(-bound, bound, shape)
    elif name == "bias":
      a = rng.uniform(-0.05, 0.05, shape)
    elif name == "scale":
      a = 1.0 + 0.1 * rng.standard_normal(shape)
    elif name == "mean":
      a = 0.1 * rng.standard_normal(shape)
    elif name == "var":
      a = np.exp(0.2 * rng.standard_normal(shape))
    elif name in ("u", "v"):
      a = rng.standard_normal(shape)
      a = a / max(float(np.linalg.norm(a)), 1e-12)
    elif name == "gamma":
      a = np.full(shape, 0.5)
    else:
      a = 0.05 * rng.standard_normal(shape)
    return np.asarray(a, dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def load_config(spec: str, overrides: Mapping[str, Any] | None = None):
  """A config from ``path[:ARG]`` relative to the repository (or absolute)."""
  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  path, _, arg = spec.partition(":")
  if not os.path.isabs(path):
    path = os.path.join(REPO, path)
  full = path + (f":{arg}" if arg else "")
  cfg = config_lib.load_config(full)
  if overrides:
    with cfg.unlocked():
      for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
          node = node[p]
        node[parts[-1]] = value
  return cfg
