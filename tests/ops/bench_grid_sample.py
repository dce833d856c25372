"""Times the grid_sample formulations (not a test; run by hand).

  .venv/bin/python tests/ops/bench_grid_sample.py [--repeats 3] [--skip-onehot]

Prints forward and forward+backward (grad w.r.t. image and grid) times, in
milliseconds, median over repeats after one warm-up call, for the shapes that
matter in DaGAN: the generator's feature warp (8, 64, 64, 256), the deformed
image (8, 256, 256, 3) and the dense-motion network's B*(K+1) small warps
(128, 64, 64, 3).  'take_along_axis' is a per-element gather variant kept here
only for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.ops import sampling


def _take_along_axis_sample(image, grid):
  """grid_sample('zeros', align_corners=False) with per-element gathers."""
  b, h, w, c = image.shape
  _, gh, gw, _ = grid.shape
  flat_grid = grid.reshape(b, gh * gw, 2)
  ix = sampling._source_coordinate(flat_grid[..., 0], w, 'zeros', False)
  iy = sampling._source_coordinate(flat_grid[..., 1], h, 'zeros', False)
  x0, wx0, wx1 = sampling._linear_taps(ix)
  y0, wy0, wy1 = sampling._linear_taps(iy)
  flat = image.reshape(b, h * w, c)
  out = 0
  for dy, wy in ((0, wy0), (1, wy1)):
    for dx, wx in ((0, wx0), (1, wx1)):
      xx, yy = x0 + dx, y0 + dy
      valid = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
      idx = jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)
      vals = jnp.take_along_axis(flat, idx[..., None], axis=1)
      out = out + vals * jnp.where(valid, wx * wy, 0)[..., None]
  return out.reshape(b, gh, gw, c)


def _time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1000 * statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--skip-onehot', action='store_true')
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  shapes = [(8, 64, 64, 256), (8, 256, 256, 3), (128, 64, 64, 3)]
  methods = ['gather', 'take_along_axis'] + ([] if args.skip_onehot
                                               else ['onehot'])
  print(f'devices: {jax.devices()}')
  for shape in shapes:
    b, h, w, c = shape
    image = jnp.asarray(rng.uniform(size=shape).astype(np.float32))
    base = np.stack(np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h)),
                    -1)
    grid = base[None] + 0.1 * rng.normal(size=(b, h, w, 2))
    grid = jnp.asarray(grid.astype(np.float32))
    for method in methods:
      if method == 'take_along_axis':
        fwd = jax.jit(_take_along_axis_sample)
      else:
        fwd = jax.jit(lambda i, g, m=method: sampling.grid_sample(i, g,
                                                                   method=m))
      loss = lambda i, g, f=fwd: jnp.sum(f(i, g) ** 2)
      bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
      t_f = _time(fwd, image, grid, repeats=args.repeats)
      t_b = _time(bwd, image, grid, repeats=args.repeats)
      print(f'{str(shape):18s} {method:16s} forward {t_f:9.1f} ms   '
            f'forward+backward {t_b:9.1f} ms', flush=True)


if __name__ == '__main__':
  main()
