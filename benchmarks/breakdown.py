"""Where the time of a compiled XLA:CPU program goes, by model scope.

:func:`time_by_scope` runs a compiled function under ``jax.profiler``,
reads the trace back with ``jax``'s own xspace reader
(``jax._src.lib._profile_data``), and sums the wall time of every executed
XLA thunk (one per fusion / convolution / dot / copy of the optimised HLO)
by the ``op_name`` metadata of that instruction. With
``flax.config.update('flax_profile', True)`` set *before* tracing, linen
modules open a ``jax.named_scope`` each, so ``op_name`` reads like
``jit(step)/.../generator/bottleneck_r0/conv1/conv_general_dilated`` and
the time can be grouped by network and sub-module. Backward ops carry
``transpose(`` in their name and are reported apart.

What is measured: the duration of each thunk as the CPU runtime records it
(wall time of the op, including its intra-op threads). Independent thunks
may run concurrently, so the sum can exceed the program's wall time; the
report gives each scope's share of the sum. Programs that nest control flow
(``while`` loops, ``lax.map``) are attributed to the loop's op_name.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
from typing import Any, Callable, Sequence

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s.*?op_name=\"([^\"]*)\"")
_WRAP = re.compile(r"^(?:jvp|transpose|vmap|checkpoint|remat|pjit|jit|shard_map|"
                   r"custom_jvp_call|custom_vjp_call|named)\((.*)\)$")


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> its ``op_name`` metadata (all computations).

  A fusion takes the ``op_name`` of the convolution or dot inside it when
  there is one (XLA gives a fusion the metadata of one of its instructions,
  which for a conv fused with the previous block's activation can name that
  previous block). An instruction without metadata (e.g. inside the body
  of a ``while`` loop) takes that of the instruction calling its
  computation.
  """
  out: dict[str, str] = {}
  heavy: dict[str, str] = {}  # computation -> op_name of its conv / dot
  calls: dict[str, str] = {}  # fusion instruction -> called computation
  operands: dict[str, list[str]] = {}  # instruction -> its operands
  comp_of: dict[str, str] = {}  # instruction -> its computation
  callers: dict[str, str] = {}  # computation -> an instruction calling it
  comp = None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*->.*\{\s*$", line.strip())
    if header:
      comp = header.group(1)
      continue
    d = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=", line)
    if not d:
      continue
    name = d.group(1)
    if comp:
      comp_of[name] = comp
    args = re.search(r"\b[\w\-]+\((%[^)]*)\)", line)
    if args:
      operands[name] = re.findall(r"%([\w.\-]+)", args.group(1))
    for key in ("calls", "body", "condition", "to_apply"):
      for sub in re.findall(key + r"=%?([\w.\-]+)", line):
        callers.setdefault(sub, name)
        if key == "calls" and "fusion(" in line:
          calls[name] = sub
    m = _INSTR.match(line)
    if not m:
      continue
    out[name] = m.group(2)
    if comp and re.search(r"=\s*\S+\s+(convolution|dot)\(", line):
      heavy.setdefault(comp, m.group(2))
  for name, called in calls.items():
    if called in heavy:
      out[name] = heavy[called]

  def resolve(name: str, depth: int = 0) -> str:
    if name in out or depth > 20:
      return out.get(name, "")
    caller = callers.get(comp_of.get(name, ""))
    if caller and caller in out:
      return out[caller]
    # No metadata (e.g. a weight-gradient convolution XLA built from
    # transposes): name it after what feeds it.
    for arg in operands.get(name, []):
      found = resolve(arg, depth + 1)
      if found:
        return found
    return resolve(caller, depth + 1) if caller else ""

  for name in list(comp_of):
    if name not in out:
      found = resolve(name)
      if found:
        out[name] = found
  return out


def scope_path(op_name: str) -> tuple[bool, list[str]]:
  """``(is_backward, [scope, ...])`` of an ``op_name``: transformation
  wrappers (``jvp(..)``, ``transpose(..)``, ``jit(..)``) are unwrapped, the
  last component (the primitive) is dropped."""
  backward = "transpose(" in op_name
  parts = []
  pieces = op_name.split("/")[:-1]
  if pieces and pieces[0].startswith("jit("):
    pieces = pieces[1:]  # the jitted function's own name
  for part in pieces:
    while True:
      m = _WRAP.match(part)
      if not m:
        break
      part = m.group(1)
    if "." in part and "(" not in part:  # 'Class.method' of a linen entry point
      part = part.split(".")[0]
      if parts and parts[-1] == part:
        continue
    if part and not part.startswith(("jit(", "jvp(", "transpose(")):
      parts.append(part)
  return backward, parts


def _thunk_events(trace_dir: str) -> list[tuple[str, str, float]]:
  """(hlo_module, hlo_op, seconds) of every executed thunk in a trace, in
  the order they started."""
  from jax._src.lib import _profile_data  # pylint: disable=import-outside-toplevel
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                           recursive=True))
  events = []
  for path in files:
    data = _profile_data.ProfileData.from_file(path)
    for plane in data.planes:
      for line in plane.lines:
        for ev in line.events:
          stats = dict(ev.stats)
          if "hlo_op" in stats:
            events.append((ev.start_ns, str(stats.get("hlo_module", "")),
                           str(stats["hlo_op"]), ev.duration_ns * 1e-9))
  events.sort()
  return [e[1:] for e in events]


def op_times(compiled: Any, args: Sequence[Any], runs: int = 3
             ) -> dict[str, float]:
  """Seconds of every HLO op (thunk) of ``compiled(*args)``: for each op,
  the *minimum* over ``runs`` calls of its summed duration within a call
  (the least disturbed by other processes on a shared machine)."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.block_until_ready(compiled(*args))
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    try:
      for _ in range(runs):
        jax.block_until_ready(compiled(*args))
    finally:
      jax.profiler.stop_trace()
    events = _thunk_events(tmp)
  # An op that runs k times per call (inside a loop) has k * runs events,
  # in call order: sum each call's k, keep the fastest call.
  counts: dict[str, list[float]] = collections.defaultdict(list)
  for _, op, sec in events:
    counts[op].append(sec)
  out = {}
  for op, secs in counts.items():
    per = len(secs) // runs if len(secs) >= runs else 1
    chunks = [sum(secs[i * per:(i + 1) * per]) for i in range(max(len(secs) // per, 1))]
    out[op] = min(chunks)
  return out


def time_by_scope(compiled: Any, args: Sequence[Any], *, runs: int = 3,
                  depth: int = 2, classify: Callable[[list[str]], str] | None = None
                  ) -> dict[str, Any]:
  """Per-scope thunk time of ``compiled(*args)`` (per-op minimum over
  ``runs`` calls, see :func:`op_times`).

  Args:
    compiled: a ``jax.stages.Compiled`` (``jax.jit(f).lower(...).compile()``).
    args: its arguments (not donated: the same args are reused).
    depth: scope components kept in a group key (after ``classify``).
    classify: optional ``scopes -> group name``; default joins the first
      ``depth`` scopes.
  Returns:
    ``{'total_s': per-run thunk seconds, 'groups': [(name, seconds per run,
    share), ...] largest first}``; backward groups are prefixed ``bwd:``.
  """
  names = op_names(compiled.as_text())
  times = op_times(compiled, args, runs)
  groups: dict[str, float] = collections.defaultdict(float)
  total = 0.0
  for op, sec in times.items():
    op_name = names.get(op, "")
    backward, scopes = scope_path(op_name)
    if classify is not None:
      key = classify(scopes)
    else:
      key = "/".join(scopes[:depth]) or (op_name.split("/")[-1] if op_name else op)
    if backward:
      key = "bwd:" + key
    groups[key] += sec
    total += sec
  ranked = sorted(groups.items(), key=lambda kv: -kv[1])
  return {"total_s": total,
          "groups": [(k, v, v / total if total else 0.0) for k, v in ranked]}


def format_breakdown(result: dict[str, Any], top: int = 20,
                     min_share: float = 0.005) -> str:
  """A text table of :func:`time_by_scope` (seconds per run and share)."""
  lines = [f"{'scope':60s} {'s/run':>8s} {'share':>6s}"]
  rest = 0.0
  for i, (name, sec, share) in enumerate(result["groups"]):
    if i < top and share >= min_share:
      lines.append(f"{name[:60]:60s} {sec:8.3f} {100 * share:5.1f}%")
    else:
      rest += sec
  if rest:
    lines.append(f"{'(rest)':60s} {rest:8.3f} {100 * rest / result['total_s']:5.1f}%")
  lines.append(f"{'total thunk time':60s} {result['total_s']:8.3f}")
  return "\n".join(lines)
