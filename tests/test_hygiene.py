"""Project rules that must stay true: no pickle anywhere in the package, every np.load refuses pickles."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_no_pickle_in_the_package():
    hits = [str(p) for p in SRC.rglob("*.py") if "pickle" in p.read_text().replace("allow_pickle=False", "")]
    assert hits == []


def test_every_np_load_disallows_pickle():
    for path in SRC.rglob("*.py"):
        for call in re.findall(r"np\.load\([^)]*\)", path.read_text()):
            assert "allow_pickle=False" in call, f"{path}: {call}"
