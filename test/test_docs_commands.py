"""Every shell block of README.md and docs/*.md marked ```bash runnable runs from the repository
root (with .venv/bin on PATH and the shared data present) and exits 0. Blocks so marked show
short durations in their own arguments, so this stays quick; other blocks are not run."""
import glob
import os
import re
import subprocess
import sys

import pytest

from dl_perception.core.paths import REPO_DIR

BLOCK = re.compile(r"^```bash runnable\n(.*?)^```", re.M | re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [os.path.join(REPO_DIR, "README.md"),
                 *sorted(glob.glob(os.path.join(REPO_DIR, "docs", "*.md")))]:
        text = open(path).read()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{os.path.relpath(path, REPO_DIR)}:{line}", match.group(1)))
    return blocks


BLOCKS = runnable_blocks()


def test_docs_mark_runnable_commands():
    assert any(where.startswith("docs/lift.md") for where, _ in BLOCKS)
    assert any(where.startswith("docs/vo.md") for where, _ in BLOCKS)


@pytest.mark.parametrize("where,commands", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_documented_commands_run(shared_data, tmp_path, where, commands):
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable),
                                                 os.environ.get("PATH", "")]),
               DL_PERCEPTION_DATA=shared_data, DOCS_TMP=str(tmp_path))
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", commands], cwd=REPO_DIR,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"{where}:\n{commands}\n--- stdout\n{result.stdout[-4000:]}"
                                    f"\n--- stderr\n{result.stderr[-4000:]}")
