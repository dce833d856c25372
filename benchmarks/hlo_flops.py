"""Loop-aware FLOP count of a compiled XLA program (matmuls and convolutions).

XLA's ``compiled.cost_analysis()['flops']`` counts the body of a ``while``
loop once, whatever its trip count (checked on jax 0.10.2: a 10-step
``lax.scan`` of a 256^3 matmul reports 1/10 of its FLOPs). DaGAN++'s
memory-linear attention is a ``lax.map`` / ``lax.scan`` over blocks, so its
FLOPs would be missed almost entirely.

:func:`matmul_flops` reads the *optimised* HLO text instead and counts
``2 * multiply-adds`` of every ``dot`` and ``convolution`` it contains,
entering fusions and called computations, and multiplying loop bodies by the
``known_trip_count`` XLA records on each ``while`` (a loop without one is
counted once and reported in ``unknown_trip_counts``). Elementwise work is
not counted: the figure is the arithmetic the matrix/convolution units do,
the same kind of work the machine peak is measured on.

For a program without loops, ``matmul_flops <= cost_analysis flops``, the
difference being XLA's elementwise and reduction count.
"""

from __future__ import annotations

import math
import re
from typing import Any

_COMP_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_ARRAY = re.compile(r"^([a-z0-9]+)\[([0-9,]*)\]")


def _shape_dims(text: str) -> list[int] | None:
  """Dims of the array shape at the start of ``text`` (None for tuples)."""
  m = _ARRAY.match(text.strip())
  if not m:
    return None
  dims = m.group(2)
  return [int(d) for d in dims.split(",")] if dims else []


def _split_type_and_op(rest: str) -> tuple[str, str, str]:
  """``'f32[2,3]{1,0} dot(%a, %b), attrs'`` -> (type, opcode, tail)."""
  rest = rest.strip()
  if rest.startswith("("):  # tuple type: skip to the matching paren
    depth = 0
    for i, ch in enumerate(rest):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        break
    type_text, after = rest[:i + 1], rest[i + 1:].strip()
  else:
    type_text, _, after = rest.partition(" ")
  m = re.match(r"([\w\-]+)\((.*)$", after)
  if not m:
    return type_text, "", after
  return type_text, m.group(1), m.group(2)


def _operands(tail: str) -> list[str]:
  """Operand names of an instruction (the text up to the closing paren)."""
  depth, end = 1, len(tail)
  for i, ch in enumerate(tail):
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      end = i
      break
  args = tail[:end]
  return [a.strip().lstrip("%") for a in re.split(r",\s*(?![^{]*\})", args)
          if a.strip()]


def parse_hlo(text: str) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
  """Computations of an HLO module: ``{name: [instruction, ...]}`` and the
  entry computation's name. Each instruction is ``{'name', 'type',
  'opcode', 'operands', 'tail'}``."""
  comps: dict[str, list[dict[str, Any]]] = {}
  entry = None
  current: list[dict[str, Any]] | None = None
  for line in text.splitlines():
    if current is None:
      m = _COMP_HEADER.match(line.strip())
      if m:
        current = comps.setdefault(m.group(1), [])
        if line.strip().startswith("ENTRY"):
          entry = m.group(1)
      continue
    if line.strip() == "}":
      current = None
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    type_text, opcode, tail = _split_type_and_op(m.group(2))
    current.append({"name": m.group(1), "type": type_text, "opcode": opcode,
                    "operands": _operands(tail) if opcode else [],
                    "tail": tail})
  return comps, entry


def _dims_attr(tail: str, key: str) -> list[int]:
  m = re.search(key + r"=\{([0-9,]*)\}", tail)
  if not m or not m.group(1):
    return []
  return [int(v) for v in m.group(1).split(",")]


def _dot_flops(instr, shapes) -> float:
  out = _shape_dims(instr["type"]) or []
  lhs = shapes.get(instr["operands"][0]) if instr["operands"] else None
  if lhs is None:
    return 0.0
  contract = _dims_attr(instr["tail"], "lhs_contracting_dims")
  k = math.prod(lhs[d] for d in contract) if contract else 1
  return 2.0 * math.prod(out) * k


def _conv_flops(instr, shapes) -> float:
  out = _shape_dims(instr["type"]) or []
  if len(instr["operands"]) < 2:
    return 0.0
  kernel = shapes.get(instr["operands"][1])
  m = re.search(r"dim_labels=[\w]+_([\w]+)->", instr["tail"])
  if kernel is None or not m:
    return 0.0
  labels = m.group(1)
  # A dilated input (lhs_dilate, as in the weight gradient of a grouped
  # conv) puts zeros between its elements: only every d-th tap is real.
  dil = re.search(r"lhs_dilate=([0-9x]+)", instr["tail"])
  lhs_dilate = [int(v) for v in dil.group(1).split("x")] if dil else []
  per_output, spatial = 1, 0
  for size, label in zip(kernel, labels):
    if label == "o":
      continue
    if label == "i":  # input features (per group)
      per_output *= size
    else:  # a spatial window dim, in order
      d = lhs_dilate[spatial] if spatial < len(lhs_dilate) else 1
      per_output *= size / d  # on average over output positions
      spatial += 1
  return 2.0 * math.prod(out) * per_output


def matmul_flops(hlo_text: str) -> dict[str, Any]:
  """Loop-aware ``2 * MACs`` of every dot and convolution in ``hlo_text``
  (``compiled.as_text()``).

  Returns ``{'flops', 'dot_flops', 'conv_flops', 'loops': [(name, trip
  count)], 'unknown_trip_counts': int}``.
  """
  comps, entry = parse_hlo(hlo_text)
  memo: dict[str, tuple[float, float]] = {}
  loops: list[tuple[str, int]] = []
  unknown = [0]

  def cost(name: str, stack: tuple[str, ...] = ()) -> tuple[float, float]:
    if name in memo:
      return memo[name]
    if name not in comps or name in stack:
      return (0.0, 0.0)
    shapes = {}
    dot = conv = 0.0
    for ins in comps[name]:
      dims = _shape_dims(ins["type"])
      if dims is not None:
        shapes[ins["name"]] = dims
    for ins in comps[name]:
      op, tail = ins["opcode"], ins["tail"]
      if op == "dot":
        dot += _dot_flops(ins, shapes)
      elif op == "convolution":
        conv += _conv_flops(ins, shapes)
      called = []
      if op == "while":
        body = re.search(r"body=%?([\w.\-]+)", tail)
        cond = re.search(r"condition=%?([\w.\-]+)", tail)
        trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', tail)
        n = int(trip.group(1)) if trip else 1
        if not trip:
          unknown[0] += 1
        loops.append((ins["name"], n))
        for sub in (body, cond):
          if sub:
            d, c = cost(sub.group(1), stack + (name,))
            dot, conv = dot + n * d, conv + n * c
        continue
      for key in ("calls", "to_apply"):
        for sub in re.findall(key + r"=%?([\w.\-]+)", tail):
          called.append(sub)
      bc = re.search(r"branch_computations=\{([^}]*)\}", tail)
      if bc:  # a conditional runs one branch: count the most expensive
        branches = [b.strip().lstrip("%") for b in bc.group(1).split(",")]
        best = max((cost(b, stack + (name,)) for b in branches),
                   key=sum, default=(0.0, 0.0))
        dot, conv = dot + best[0], conv + best[1]
      if op in ("reduce", "reduce-window", "scatter", "select-and-scatter",
                "sort", "map", "all-reduce", "reduce-scatter"):
        continue  # scalar combiners
      for sub in called:
        d, c = cost(sub, stack + (name,))
        dot, conv = dot + d, conv + c
    memo[name] = (dot, conv)
    return memo[name]

  if entry is None:
    return {"flops": 0.0, "dot_flops": 0.0, "conv_flops": 0.0, "loops": [],
            "unknown_trip_counts": 0}
  d, c = cost(entry)
  return {"flops": d + c, "dot_flops": d, "conv_flops": c, "loops": loops,
          "unknown_trip_counts": unknown[0]}
