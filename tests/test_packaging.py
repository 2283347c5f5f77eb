"""The package as someone else installs it: a wheel that declares what it needs, installed into
a fresh virtualenv, runs `amanet doctor` and `amanet predict --demo` there; a missing optional
library is one line naming the extra that brings it."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from amanet.cli import main
from amanet.extras import EXTRAS, MODULE_EXTRA
from scratch import scratch_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(request, tmp_path_factory):
    """The wheel `pip wheel --no-build-isolation .` makes (packaging the op library this
    checkout already built, AMANET_REUSE_BUILT_EXT=1, so CI compiles once)."""
    out = scratch_dir(request, tmp_path_factory, "wheel")
    env = dict(os.environ, AMANET_REUSE_BUILT_EXT="1")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                        "--no-index", "-q", "-w", str(out), str(ROOT)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(out.glob("amanet-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _metadata(wheel: Path) -> list:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode().splitlines()


def test_wheel_declares_its_requirements_and_extras(wheel):
    meta = _metadata(wheel)
    requires = [line.split(": ", 1)[1] for line in meta if line.startswith("Requires-Dist: ")]
    plain = {r.split(";")[0].strip() for r in requires if "extra ==" not in r}
    release = torch.__version__.split("+")[0]
    assert f"torch=={release}" in plain, plain       # the op library's C++ ABI is this torch's
    for name in ("torchvision", "numpy", "pillow", "opencv-python-headless", "PyYAML", "tqdm"):
        assert any(r.lower().startswith(name.lower()) for r in plain), (name, plain)
    extras = {line.split(": ", 1)[1] for line in meta if line.startswith("Provides-Extra: ")}
    assert extras == set(EXTRAS), extras
    assert any(r.startswith("av") and 'extra == "video"' in r for r in requires), requires
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert any(n.startswith("amanet/_C") and n.endswith(".so") for n in names)
    assert "amanet/assets/demo_ama_r18_synthetic.pth" in names
    assert any(n.startswith("amanet/configs/") and n.endswith(".yaml") for n in names)


def test_wheel_in_a_fresh_venv_runs_doctor_and_the_demo(wheel, tmp_path):
    venv = tmp_path / "venv"
    # without pip: the venv's own bundled setuptools would shadow the newer one torch requires;
    # this interpreter's pip installs into it (pip --python)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    vpy = venv / "bin" / "python"
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The fresh venv sees this machine's installed libraries (torch is several GB; no download)
    # through a .pth line, after its own site-packages: pip must find every declared requirement
    # there (--no-index: an undeclared or unsatisfiable one fails the install) and amanet itself
    # comes from the wheel, not from this checkout.
    (Path(site) / "machine_libs.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install",
                        "--no-index", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run([str(vpy), "-c", "import amanet, amanet._C; print(amanet.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(site), where.stdout
    doctor = subprocess.run([str(venv / "bin" / "amanet"), "doctor"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "op library: cpu" in doctor.stdout and "roi_align" in doctor.stdout, doctor.stdout
    demo = subprocess.run([str(venv / "bin" / "amanet"), "predict", "--demo", "--out", "demo"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert list((tmp_path / "demo").glob("*_iuv.png"))


@pytest.mark.parametrize("module", sorted(MODULE_EXTRA))
def test_a_missing_optional_library_is_one_line_naming_its_extra(module, monkeypatch, capsys):
    from amanet.extras import missing_extra_message

    monkeypatch.setitem(sys.modules, module, None)        # `import module` now fails
    with pytest.raises(ModuleNotFoundError) as e:
        __import__(module)
    message = missing_extra_message(e.value)
    assert message.endswith(f"pip install 'amanet[{MODULE_EXTRA[module][1]}]'")
    assert MODULE_EXTRA[module][1] in EXTRAS


def test_amanet_video_without_pyav(tmp_path, monkeypatch, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    monkeypatch.setitem(sys.modules, "av", None)
    assert main(["video", str(tmp_path / "clip.mp4"), str(tmp_path / "out.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: this needs PyAV (module 'av'), which is not installed: "
                   "pip install 'amanet[video]'"]
    assert not list(tmp_path.glob("out*"))


def test_each_optional_module_is_installed_by_its_extra():
    """One table (amanet.extras.OPTIONAL_MODULES) says what doctor reports and which extra a
    missing module's error names: the extra's requirements carry that module's distribution."""
    import re

    from amanet.doctor import OPTIONAL
    from amanet.extras import OPTIONAL_MODULES

    assert set(OPTIONAL) == set(OPTIONAL_MODULES) >= set(MODULE_EXTRA)
    for module, (_, _, dist, extra) in OPTIONAL_MODULES.items():
        if extra is not None:
            names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0] for r in EXTRAS[extra]}
            assert dist in names, (module, extra, EXTRAS[extra])
