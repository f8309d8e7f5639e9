"""The README's examples run as written: every command block marked ``<!-- readme-test -->`` (the line before its
fence; offline and short, by the README's convention) runs in bash from a fresh folder beside ``../shared``, with an
empty cache, and must succeed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
MARK = "<!-- readme-test -->"


def marked_blocks() -> list[tuple[int, str]]:
    """(line number, body) of each marked block; a mark not followed by a bash block is an error."""
    lines = README.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        assert lines[i + 1].strip() == "```bash", f"README.md:{i + 1}: {MARK} must precede a ```bash block"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        blocks.append((i + 2, "\n".join(lines[i + 2 : end])))
    return blocks


def test_the_readme_marks_its_offline_examples():
    bodies = [b for _, b in marked_blocks()]
    assert len(bodies) >= 2 and all(re.search(r"^mobilezoo ", b, re.M) for b in bodies)


@pytest.mark.parametrize(("line", "block"), marked_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_block_runs_as_written(line, block, tmp_path):
    work = tmp_path / "main"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)  # the README's ../shared, seen from the project root
    env = {**os.environ, "MOBILEZOO_HOME": str(tmp_path / "home")}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, f"README.md:{line}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
