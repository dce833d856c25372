"""The C allocator choice and its launcher (dagan_jax/allocator.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

from dagan_jax import allocator as al

GLIBC = (2, 36)


def _env(tmp_path, **kw):
  """allocator_env on a fake machine: libraries only in tmp_path/lib."""
  lib = tmp_path / "lib"
  lib.mkdir(exist_ok=True)
  environ = kw.pop("environ", {})
  return al.allocator_env(environ, kw.pop("choice", None), glibc=kw.pop("glibc", GLIBC),
                          thp=kw.pop("thp", "madvise"), dirs=[str(lib)])


def _fake_lib(tmp_path, name):
  lib = tmp_path / "lib"
  lib.mkdir(exist_ok=True)
  (lib / name).write_bytes(b"\x7fELF")
  return str(lib / name)


def test_auto_prefers_jemalloc_and_turns_purging_off(tmp_path):
  _fake_lib(tmp_path, "libtcmalloc_minimal.so.4")
  path = _fake_lib(tmp_path, "libjemalloc.so.2")
  desc, env = _env(tmp_path)
  assert desc.startswith("jemalloc") and path in desc
  assert env == {"LD_PRELOAD": path, "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
  # The user's own jemalloc settings and other preloads are kept.
  _, env = _env(tmp_path, environ={"MALLOC_CONF": "narenas:2", "LD_PRELOAD": "/x/libfoo.so"})
  assert env == {"LD_PRELOAD": f"{path} /x/libfoo.so"}


def test_auto_falls_back_to_tcmalloc_then_leaves_glibc_alone(tmp_path):
  path = _fake_lib(tmp_path, "libtcmalloc_minimal.so.4")
  desc, env = _env(tmp_path)
  assert desc.startswith("tcmalloc")
  assert env == {"LD_PRELOAD": path, "TCMALLOC_RELEASE_RATE": "0"}
  os.remove(path)
  mi = _fake_lib(tmp_path, "libmimalloc.so.3")
  desc, env = _env(tmp_path)
  assert desc.startswith("mimalloc") and mi in desc
  assert env == {"LD_PRELOAD": mi, "MIMALLOC_PURGE_DELAY": "-1"}
  # The user's own mimalloc setting is kept.
  _, env = _env(tmp_path, environ={"MIMALLOC_PURGE_DELAY": "100"})
  assert env == {"LD_PRELOAD": mi}
  os.remove(mi)
  desc, env = _env(tmp_path)
  assert env == {} and desc == "system (no jemalloc, tcmalloc or mimalloc found)"
  with pytest.raises(al.AllocatorError, match="no mimalloc library found"):
    _env(tmp_path, choice="mimalloc")


def test_the_mimalloc_wheel_is_searched_first():
  import sysconfig
  site = sysconfig.get_paths()["purelib"]
  assert al.wheel_dirs()[0] == os.path.join(site, "cmeel.prefix", "lib")
  path = al.find_library("mimalloc", environ={})
  if os.path.isfile(os.path.join(al.wheel_dirs()[0], "libmimalloc.so.3")):
    # cmeel-mimalloc is installed here.
    assert path == os.path.join(al.wheel_dirs()[0], "libmimalloc.so.3")


def test_glibc_huge_pages_when_asked_for(tmp_path):
  desc, env = _env(tmp_path, choice="glibc-thp",
                   environ={"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
  assert "huge pages" in desc
  assert env == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.cpu.hwcaps=-AVX2"}
  # Too old a glibc, another C library, or THP off: a clear error.
  for glibc, thp in (((2, 31), "madvise"), (None, "always"), (GLIBC, "never"), (GLIBC, None)):
    with pytest.raises(al.AllocatorError, match="glibc-thp needs glibc 2.35"):
      _env(tmp_path, choice="glibc-thp", glibc=glibc, thp=thp)


def test_user_choices_are_respected(tmp_path):
  _fake_lib(tmp_path, "libjemalloc.so.2")
  for environ in ({"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"},
                  {"LD_PRELOAD": "/opt/mimalloc/libmimalloc.so"},
                  {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}):
    desc, env = _env(tmp_path, environ=environ)
    assert env == {} and desc.startswith("as set")
  assert _env(tmp_path, choice="system") == ("system (as started)", {})
  assert _env(tmp_path, environ={al.ENV: "SYSTEM"})[1] == {}
  # An explicit choice overrides what is found first.
  desc, env = _env(tmp_path, choice="glibc-thp")
  assert env == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_bad_settings_name_the_variable(tmp_path):
  with pytest.raises(al.AllocatorError, match="DAGAN_JAX_ALLOCATOR='bogus'"):
    _env(tmp_path, environ={al.ENV: "bogus"})
  with pytest.raises(al.AllocatorError, match="no jemalloc library found.*DAGAN_JAX_MALLOC_LIB"):
    _env(tmp_path, choice="jemalloc")
  with pytest.raises(al.AllocatorError, match="glibc 2.35 or newer.*here: 2.31"):
    _env(tmp_path, choice="glibc-thp", glibc=(2, 31))
  with pytest.raises(al.AllocatorError, match="'madvise' or 'always'.*here: never"):
    _env(tmp_path, choice="glibc-thp", thp="never")
  with pytest.raises(al.AllocatorError, match="DAGAN_JAX_MALLOC_LIB=.*no such file"):
    _env(tmp_path, environ={al.LIB_ENV: str(tmp_path / "nope.so")})
  other = _fake_lib(tmp_path, "libz.so.1")
  with pytest.raises(al.AllocatorError, match="not a jemalloc, tcmalloc or mimalloc"):
    _env(tmp_path, environ={al.LIB_ENV: other})


def test_named_library_wins(tmp_path):
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  (elsewhere / "libjemalloc.so.2").write_bytes(b"\x7fELF")
  desc, env = _env(tmp_path, environ={al.LIB_ENV: str(elsewhere / "libjemalloc.so.2")})
  assert env["LD_PRELOAD"] == str(elsewhere / "libjemalloc.so.2")
  # A named tcmalloc is used even where a jemalloc would be found.
  _fake_lib(tmp_path, "libjemalloc.so.2")
  (elsewhere / "libtcmalloc.so.4").write_bytes(b"\x7fELF")
  desc, env = _env(tmp_path, environ={al.LIB_ENV: str(elsewhere / "libtcmalloc.so.4")})
  assert desc.startswith("tcmalloc") and env["LD_PRELOAD"].endswith("elsewhere/libtcmalloc.so.4")


def test_thp_mode_and_glibc_version(tmp_path):
  f = tmp_path / "enabled"
  f.write_text("always [madvise] never\n")
  assert al.thp_mode(str(f)) == "madvise"
  f.write_text("[always] madvise never\n")
  assert al.thp_mode(str(f)) == "always"
  assert al.thp_mode(str(tmp_path / "missing")) is None
  version = al.glibc_version()
  if sys.platform == "linux" and version is not None:
    assert version >= (2, 17)


_PROBE = textwrap.dedent("""
    import os, sys
    print("run", os.environ.get({applied!r}, "-"),
          os.environ.get("GLIBC_TUNABLES", "-"), " ".join(sys.argv[1:]), flush=True)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="preloading an allocator is Linux-only")
def test_the_launcher_runs_the_command_with_the_allocator(tmp_path):
  """python -m dagan_jax.allocator COMMAND: the command runs in its place,
  with the allocator's environment and its own arguments."""
  try:
    al.allocator_env({}, "glibc-thp")
  except al.AllocatorError:
    pytest.skip("this machine has no glibc huge-page route to exercise")
  script = tmp_path / "probe.py"
  script.write_text(_PROBE.format(applied=al.APPLIED_ENV))
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", al.APPLIED_ENV)}
  launch = [sys.executable, "-m", "dagan_jax.allocator"]
  proc = subprocess.run(
      launch + ["--allocator", "glibc-thp", sys.executable, str(script), "a", "--b"],
      env=env, text=True, capture_output=True, check=True, timeout=60)
  assert proc.stderr.startswith("C allocator: glibc with transparent huge pages")
  out = proc.stdout.splitlines()
  assert len(out) == 1 and out[0].startswith("run glibc with transparent huge pages")
  assert out[0].endswith("glibc.malloc.hugetlb=1 a --b")
  # system: the command runs with the environment as it is.
  env[al.ENV] = "system"
  out = subprocess.run(launch + [sys.executable, str(script)], env=env, text=True,
                       capture_output=True, check=True, timeout=60).stdout.splitlines()
  assert out == ["run - - "]


def test_the_launcher_reports_bad_settings_and_commands():
  env = dict(os.environ, **{al.ENV: "bogus"})
  launch = [sys.executable, "-m", "dagan_jax.allocator"]
  proc = subprocess.run(launch + ["true"], env=env, text=True,
                        capture_output=True, timeout=60)
  assert proc.returncode == 2
  assert "error: DAGAN_JAX_ALLOCATOR='bogus'" in proc.stderr
  env[al.ENV] = "system"
  proc = subprocess.run(launch + ["/nonexistent/command"], env=env, text=True,
                        capture_output=True, timeout=60)
  assert proc.returncode == 127 and "/nonexistent/command" in proc.stderr


def test_the_cli_does_not_re_execute_itself():
  """The dagan-jax command runs as started, whatever DAGAN_JAX_ALLOCATOR says."""
  env = dict(os.environ, **{al.ENV: "bogus"})
  env.pop(al.APPLIED_ENV, None)
  proc = subprocess.run([sys.executable, "-m", "dagan_jax.cli", "info", "--config",
                         "configs/smoke.py"], env=env, text=True,
                        capture_output=True, timeout=120,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr
  assert "allocator" not in proc.stderr.lower()


def test_status_line():
  assert al.status_line({al.APPLIED_ENV: "jemalloc (/x/libjemalloc.so.2)"}) == (
      "C allocator: jemalloc (/x/libjemalloc.so.2)")
  assert al.status_line({"LD_PRELOAD": "/x/libtcmalloc.so.4"}) == (
      "C allocator: as set (LD_PRELOAD=/x/libtcmalloc.so.4)")
  line = al.status_line({})
  assert "malloc" in line and "jemalloc" in line
  assert "python -m dagan_jax.allocator dagan-jax" in line
