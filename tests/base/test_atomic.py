"""hklflow.base.atomic: the one atomic writer (a file, a file adopted by a rename, a folder,
a copy), whole or not at all."""
from __future__ import annotations

import os

import pytest

from hklflow.base.atomic import (atomic_folder, atomic_path, copy_atomically,
                                 remove_stale_temporaries, write_json_atomically)


def test_a_file_is_there_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("one")
        assert not path.exists() and tmp.parent == path.parent
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert path.read_text() == "one" and sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_a_file_moved_in_goes_back_on_failure(tmp_path):
    src, out = tmp_path / "part.nxs", tmp_path / "volume.nxs"
    src.write_text("arrays")
    with pytest.raises(OSError):
        with atomic_path(out, moved_from=src) as tmp:
            assert tmp.read_text() == "arrays" and not src.exists()
            raise OSError("disk full")
    assert src.read_text() == "arrays" and not out.exists()
    with atomic_path(out, moved_from=src) as tmp:
        tmp.write_text(tmp.read_text() + " with a new header")
    assert out.read_text() == "arrays with a new header" and not src.exists()


def test_a_folder_is_there_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "v001") as tmp:
            (tmp / "a").write_text("x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(tmp_path / "v001") as tmp:
        (tmp / "a").write_text("x")
    assert (tmp_path / "v001" / "a").read_text() == "x" and len(list(tmp_path.iterdir())) == 1


def test_a_copy_and_json(tmp_path):
    write_json_atomically(tmp_path / "a.json", {"a": 1})
    copy_atomically(tmp_path / "a.json", tmp_path / "b" / "a.json")
    assert (tmp_path / "b" / "a.json").read_text() == '{\n "a": 1\n}\n'


def test_temporaries_of_a_killed_writer_are_removed(tmp_path):
    path = tmp_path / "a.nxs"
    gone = tmp_path / ".a.nxs.999999999@nohost.0123456789ab.tmp"  # another machine's, old
    gone.write_text("")
    os.utime(gone, (0, 0))
    with atomic_path(path) as tmp:  # this process's own: alive, kept
        tmp.write_text("")
        assert remove_stale_temporaries(path) == [gone] and tmp.exists()
