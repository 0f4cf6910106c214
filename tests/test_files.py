"""One rule for writing a user's files (condlab.files): modes, links, folders, refusals."""

from __future__ import annotations

import os

import pytest

from condlab.errors import UsageError
from condlab.files import atomic_write_text, check_output


def test_a_replaced_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.json", "{}")
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new"


def test_a_symbolic_link_is_written_through(tmp_path):
    target = tmp_path / "real" / "r.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "r.csv"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.csv"]


def test_missing_folders_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "r.json"
    check_output(path, force=False, flag="--output")
    assert not (tmp_path / "a").exists()  # checking writes nothing
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}"


@pytest.mark.parametrize("case, words", [("exists", "--force"), ("folder", "is a folder"),
                                         ("under a file", "is a file")])
def test_refused_before_any_work(tmp_path, case, words):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    path = {"exists": tmp_path / "f", "folder": tmp_path / "d", "under a file": tmp_path / "f" / "r"}
    with pytest.raises(UsageError, match=words):
        check_output(path[case], force=case != "exists", flag="--output")
