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


def test_only_batch_norms_own_module_and_its_registry_line_name_it():
    """Every fact about a kind is in its record (``layer.Kind``): mirrors, ONNX, folding, data parallel, diagnose
    and the study's BN settings read it there, so no other module may special-case the kind by name (a layer
    table, ``kind = "batch_norm"`` or ``{"kind": "batch_norm"}``, is the spec language, not a special case)."""
    allowed = {SRC / "normlab" / "norms" / "batch_norm.py", SRC / "normlab" / "nn" / "registry.py"}
    hits = [f"{path}: {line.strip()}" for path in SRC.rglob("*.py") if path not in allowed
            for line in path.read_text().splitlines() if re.search(r"(?<!kind = )(?<!\"kind\": )[\"']batch_norm[\"']", line)
            and "__all__" not in line]
    assert hits == []
