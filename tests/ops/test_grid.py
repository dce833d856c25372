"""make_coordinate_grid against the FOMM formula and torch's layout."""

import jax
import numpy as np
import pytest

from dagan_jax.ops import make_coordinate_grid


@pytest.mark.parametrize('size', [(2, 2), (5, 7), (64, 64), (3, 10)])
def test_make_coordinate_grid_formula(size):
  h, w = size
  grid = np.asarray(jax.jit(make_coordinate_grid, static_argnums=0)(size))
  assert grid.shape == (h, w, 2) and grid.dtype == np.float32
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  np.testing.assert_allclose(grid[..., 0], 2 * j / (w - 1) - 1, atol=1e-7)
  np.testing.assert_allclose(grid[..., 1], 2 * i / (h - 1) - 1, atol=1e-7)
  assert grid[0, 0].tolist() == [-1.0, -1.0]
  assert grid[-1, -1].tolist() == [1.0, 1.0]


def test_make_coordinate_grid_matches_torch_fomm():
  """Bit-equal to the official torch construction."""
  torch = pytest.importorskip('torch')
  h, w = 6, 9
  x = 2 * (torch.arange(w).float() / (w - 1)) - 1
  y = 2 * (torch.arange(h).float() / (h - 1)) - 1
  want = torch.stack([x.view(1, -1).repeat(h, 1), y.view(-1, 1).repeat(1, w)],
                     2).numpy()
  np.testing.assert_array_equal(np.asarray(make_coordinate_grid((h, w))), want)
