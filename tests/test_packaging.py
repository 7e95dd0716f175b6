"""The design card's layout survives packaging: `callbacks/` installs as `trl_ppo_plus.callbacks` and
`model_cards/` as package data, in an editable install and in a built wheel alike."""

import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def _shipped_files(top: str) -> set[str]:
    """Files of a top-level folder that must ship (everything but caches)."""
    return {
        p.relative_to(ROOT / top).as_posix()
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_editable_install_exposes_callbacks_and_model_cards():
    import trl_ppo_plus.callbacks as cb

    assert Path(cb.__file__).resolve().parent == ROOT / "callbacks"
    names = {p.name for p in resources.files("trl_ppo_plus.model_cards").iterdir()}
    assert {Path(f).name for f in _shipped_files("model_cards")} <= names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        cwd=out,
    )
    (whl,) = out.glob("trl_ppo_plus-*.whl")
    return whl


def test_wheel_contains_callbacks_and_model_cards(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for top, pkg in [("callbacks", "trl_ppo_plus/callbacks"), ("model_cards", "trl_ppo_plus/model_cards")]:
        for rel in _shipped_files(top):
            assert f"{pkg}/{rel}" in names, f"{top}/{rel} missing from the wheel"
    assert "trl_ppo_plus/__init__.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "trl-ppo-plus = trl_ppo_plus.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_imports_resources_outside_the_checkout(wheel, tmp_path):
    # Unpack the wheel and import from there, with the checkout off sys.path: what a user of the wheel sees.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, importlib.resources as r, trl_ppo_plus, trl_ppo_plus.callbacks as cb;"
        f"assert trl_ppo_plus.__file__.startswith({str(site)!r}), trl_ppo_plus.__file__;"
        f"assert cb.__file__.startswith({str(site)!r});"
        "print(sorted(p.name for p in r.files('trl_ppo_plus.model_cards').iterdir()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for rel in _shipped_files("model_cards"):
        assert Path(rel).name in result.stdout
