"""The layers of PROTOCOL's architecture hold: `lint-imports` keeps the contracts of
pyproject's [tool.importlinter] (engine below actors below transports below bench).

import-linter finds a package's modules by walking its folder, and the layer folders
are mapped into `tidings` by pyproject's package-dir, so the check runs on a tree of
symlinks laid out as an installed `tidings` is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"engine": "engine", "actors": "actors", "transports": "transports", "bench": "bench"}


def installed_layout(into: Path) -> Path:
    """`into/tidings`, its files and layer folders linked from the repository."""
    package = into / "tidings"
    package.mkdir()
    for item in (ROOT / "tidings").iterdir():
        if item.name != "__pycache__":
            (package / item.name).symlink_to(item)
    for name, folder in LAYERS.items():
        (package / name).symlink_to(ROOT / folder, target_is_directory=True)
    return package


def test_lint_imports_keeps_every_contract(tmp_path: Path) -> None:
    installed_layout(tmp_path)
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
