"""A non-editable install carries its default config: the wheel, installed into a fresh virtual
environment, runs ``grit-ray config show`` from a directory that has no checkout in it."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_wheel_install_has_the_default_config(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True)
    wheel = next(wheels.glob("grit_ray-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    # the dependencies come from this environment, after the wheel on the path (a plain path, so
    # the checkout's editable install is not activated)
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import grit_ray, sys; from grit_ray.cli import main; print(grit_ray.__file__, file=sys.stderr); "
                          "sys.argv = ['grit-ray', 'config', 'show']; sys.exit(main())"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(site) in out.stderr  # the installed copy ran, not the checkout
    shown = yaml.safe_load(out.stdout)
    packaged = yaml.safe_load((REPO / "grit_ray" / "configs" / "tiny-cpu.yaml").read_text())
    assert shown["run"]["steps"] == packaged["run"]["steps"] and shown["model"]["path"] is None
