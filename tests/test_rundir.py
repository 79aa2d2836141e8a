"""The run folder's claim: what a failed or interrupted command leaves of a folder it made."""

import pytest

from normlab import rundir
from normlab.errors import ConfigError


def test_claim_leaves_no_folder_of_its_own_holding_only_its_lock(tmp_path):
    (tmp_path / "existed").mkdir()
    for folder in (tmp_path / "new" / "nested", tmp_path / "existed"):
        with pytest.raises(ConfigError), rundir.claim(folder):
            raise ConfigError("a bad argument")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existed"]
    with pytest.raises(KeyboardInterrupt), rundir.claim(tmp_path / "kept"):
        (tmp_path / "kept" / "results.json").write_text("{}")
        raise KeyboardInterrupt
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [".normlab-lock", "results.json"]
