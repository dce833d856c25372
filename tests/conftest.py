"""Test setup: simulate 4 CPU devices before JAX is imported anywhere."""

import os

# Every program the tests compile, the package's and their own, is built
# with LLVM at -O0 and XLA:CPU's older loop emitters: the same optimised
# HLO, machine code generated in about half the time (the suite is bound by
# compiling many small programs, each run a few times). Results differ from
# the default build by rounding only, which the tests' float32 bounds
# allow for (tests/float32_bounds.py). A flag already in XLA_FLAGS wins.
_FLAGS = {"--xla_force_host_platform_device_count": "4",
          "--xla_backend_optimization_level": "0",
          "--xla_cpu_use_fusion_emitters": "false"}
_xla_flags = os.environ.get("XLA_FLAGS", "")
for _name, _value in _FLAGS.items():
  if _name + "=" not in _xla_flags:
    _xla_flags = f"{_xla_flags} {_name}={_value}".strip()
os.environ["XLA_FLAGS"] = _xla_flags
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("DAGAN_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  if not SHARED.is_dir():
    pytest.fail(f"shared data folder not found at {SHARED} (set DAGAN_SHARED)")
  return SHARED


@pytest.fixture(scope="session")
def fixture_dir(shared_dir) -> pathlib.Path:
  return pathlib.Path(os.environ.get(
      "DAGAN_PARITY_FIXTURE", shared_dir / "fixtures" / "small"))


def _speech_fixture_dir(shared_dir, env: str, name: str) -> pathlib.Path:
  d = pathlib.Path(os.environ.get(env) or shared_dir / "fixtures" / name)
  if not d.is_dir():
    pytest.fail(f"{d} not found (set {env})")
  return d


def _speech_fixture(shared_dir, env: str, name: str):
  """The npz of a speech-system fixture (directory from ``env`` if set)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  npz = pathlib.Path(os.environ.get(env) or shared_dir / "fixtures" / name) / "fixture.npz"
  if not npz.is_file():
    pytest.fail(f"{npz} not found (set {env})")
  return np.load(npz)


@pytest.fixture(scope="session")
def a2h_npz(shared_dir):
  """Audio2Head's official numbers (``DAGAN_A2H_FIXTURE``)."""
  return _speech_fixture(shared_dir, "DAGAN_A2H_FIXTURE", "audio2head_small")


@pytest.fixture(scope="session")
def a2h_dir(shared_dir) -> pathlib.Path:
  """Audio2Head's fixture folder (``DAGAN_A2H_FIXTURE``): audio2head.pth.tar,
  config.yaml, fixture.npz, meta.json."""
  return _speech_fixture_dir(shared_dir, "DAGAN_A2H_FIXTURE", "audio2head_small")


@pytest.fixture(scope="session")
def a2h_state_dicts(a2h_dir):
  """``{'audio2pose', 'audio2kp', 'kp_detector', 'generator'}`` state dicts
  of the fixture's official checkpoint, as numpy float32 arrays."""
  torch = pytest.importorskip("torch")
  ckpt = torch.load(a2h_dir / "audio2head.pth.tar", map_location="cpu", weights_only=True)
  return {k: {n: v.numpy() for n, v in sd.items()} for k, sd in ckpt.items()}


@pytest.fixture(scope="session")
def a2h_config(a2h_dir) -> dict:
  """The fixture's config.yaml (``parameters`` and ``vox-256`` sections)."""
  import yaml  # pylint: disable=import-outside-toplevel
  with open(a2h_dir / "config.yaml") as f:
    return yaml.safe_load(f)


@pytest.fixture(scope="session")
def iplap_dir(shared_dir) -> pathlib.Path:
  """IP_LAP's fixture folder (``DAGAN_IPLAP_FIXTURE``)."""
  return _speech_fixture_dir(shared_dir, "DAGAN_IPLAP_FIXTURE", "ip_lap_small")


@pytest.fixture(scope="session")
def iplap_npz(shared_dir):
  """IP_LAP's official numbers (``DAGAN_IPLAP_FIXTURE``)."""
  return _speech_fixture(shared_dir, "DAGAN_IPLAP_FIXTURE", "ip_lap_small")


# Compiled XLA programs are cached across tests (and runs) of the same shapes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(REPO / ".pytest_cache" / "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")


def pytest_collection_modifyitems(items):
  """Tests marked ``slow`` (end-to-end trainer runs, tens of seconds each)
  run first, so that under ``-n 2`` the workers share them out at the start
  instead of one worker finishing a long run while the other sits idle.
  The sort is stable: every other test keeps its collected order."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
