"""The distribution's shape: only keyfence-named packages, and the old program import still working."""

from __future__ import annotations

import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

import keyfence.program

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_only_keyfence_named_top_level_packages(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("keyfence-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"keyfence", "keyfence_policies"}
    for package in ("spec", "vault", "check", "cli", "keystore"):
        assert f"keyfence/{package}/__init__.py" in names
    assert "keyfence_policies/pack.py" in names


def test_the_deprecated_program_import_warns_and_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    import infra.program

    sentinel = {"momentum/executor": {"namespace": "momentum"}}
    monkeypatch.setattr(keyfence.program, "run_from_config", lambda: sentinel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert infra.program.run_from_config() is sentinel
    (warning,) = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert "from keyfence.program import run_from_config" in str(warning.message)
    assert Path(warning.filename).resolve() == Path(__file__).resolve(), "the warning points at the caller"
