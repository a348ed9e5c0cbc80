"""Raw files as the plan sees them (hklflow.raw.rawfiles, issue 71 defects 3-5): a file whose
content changed since ingest is planned again whatever its modification time says, the
fingerprint's reach is a setting with a documented blind spot, and no two entries hold the
same data."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from hklflow.raw import rawfiles
from hklflow.raw.rawfiles import (FINGERPRINT_BLOCK, RawChangeCheck, RawFileOwners, fingerprint,
                                  same_content)

from conftest import REPO, job_counts, run_snakemake

SIZE = 64 * FINGERPRINT_BLOCK  # 8 sampled blocks of 64: most of the file is between them


def write(path, seed: int):
    path.write_bytes(np.random.default_rng(seed).integers(0, 255, SIZE, dtype=np.uint8)
                     .tobytes())
    return path


def replace_keeping_mtime(path, content_from):
    """`cp -p other x; touch -r path x; mv x path`: another file under the old name and time."""
    st = os.stat(path)
    tmp = path.with_name(path.name + ".new")
    shutil.copyfile(content_from, tmp)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def overwrite_in_place(path, offset: int):
    """Bytes changed inside the file, size and mtime as they were (the in-place frame)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(16)
        f.seek(offset)
        f.write(bytes((b + 1) % 256 for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def ingested(tmp_path):
    """Two raw files and a 'scan file' standing for what ingest recorded of them."""
    files = [write(tmp_path / "f1.cbf", 1), write(tmp_path / "f2.cbf", 2)]
    scan_file = tmp_path / "scan.nxs"
    records = {}

    def check(reach="sampled"):  # ingest (again): the scan file written
        scan_file.write_text(f"ingested, fingerprints {reach}")
        records[str(scan_file)] = [str(f) for f in files], [fingerprint(f, reach) for f in files]
        return RawChangeCheck(lambda p: records[str(p)], folder=tmp_path / "state")

    return files, scan_file, check


def test_a_file_replaced_with_its_mtime_kept_is_a_change(ingested, tmp_path):
    files, scan_file, make_check = ingested
    check = make_check()
    assert check.changed("s/300K/f1", scan_file, files) == []
    other = write(tmp_path / "other", 3)
    replace_keeping_mtime(files[1], other)
    assert os.stat(files[1]).st_mtime_ns == check.read_recorded(scan_file)[1][1]["mtime_ns"]
    assert check.changed("s/300K/f1", scan_file, files) == [files[1]]
    # the same bytes under a new name, time and inode (a copied experiment): no change
    replace_keeping_mtime(files[1], shutil.copyfile(files[0], tmp_path / "f1 copy"))
    replace_keeping_mtime(files[0], tmp_path / "f1 copy")
    assert check.changed("s/300K/f1", scan_file, files) == [files[1]]  # f2 holds f1's bytes


def test_an_unchanged_file_is_not_read_again(ingested, tmp_path, monkeypatch):
    """A plan stats the files; it hashes only those written to since (then remembers)."""
    files, scan_file, make_check = ingested
    check = make_check()
    check.changed("s/300K/f1", scan_file, files)
    shutil.copy2(files[0], tmp_path / "copy")
    replace_keeping_mtime(files[0], tmp_path / "copy")  # a new inode and ctime, same bytes
    hashed = []
    real = rawfiles.fingerprint
    monkeypatch.setattr(rawfiles, "fingerprint", lambda p, reach="sampled": (
        hashed.append(p), real(p, reach))[1])
    assert check.changed("s/300K/f1", scan_file, files) == []
    assert hashed == [files[0]]
    assert check.changed("s/300K/f1", scan_file, files) == [] and hashed == [files[0]]
    # a scan file written again (ingest ran): its record is read again
    scan_file.write_text("ingested again")
    assert check.changed("s/300K/f1", scan_file, files) == []
    # not ingested yet, or other files than ingest saw: nothing for this check to say
    assert check.changed("s/300K/f1", scan_file, files[:1]) == []
    assert check.changed("s/300K/f1", tmp_path / "missing.nxs", files) == []


def test_the_sampled_fingerprint_is_blind_between_its_blocks_and_full_is_not(ingested):
    """The documented blind spot: a same-size change between the sampled blocks (one frame
    overwritten in place) is seen only with the reach `full`."""
    files, scan_file, make_check = ingested
    sampled, full = make_check("sampled"), None
    assert sampled.changed("s/300K/f1", scan_file, files) == []
    overwrite_in_place(files[0], SIZE // 14)  # between the first and the second block
    assert same_content(fingerprint(files[0]), sampled.read_recorded(scan_file)[1][0])
    assert sampled.changed("s/300K/f1", scan_file, files) == []  # the blind spot
    full = make_check("full")  # ingest again with every byte hashed
    assert full.changed("s/300K/f1", scan_file, files) == []
    overwrite_in_place(files[0], SIZE // 14)
    assert full.changed("s/300K/f1", scan_file, files) == [files[0]]
    assert "sha256" in fingerprint(files[0], "full") and "sha256" not in fingerprint(files[0])
    with pytest.raises(ValueError, match="reach must be one of"):
        fingerprint(files[0], "every")


def test_switching_to_the_full_fingerprint_is_planning_s_check_alone(ingested, tmp_path):
    """reduction.ingest.fingerprint: full on entries ingested with the sampled one (issue 86):
    the first plan hashes every byte and keeps it (no ingest again); from then on a same-size
    change between the sampled blocks is seen."""
    files, scan_file, make_check = ingested
    sampled = make_check("sampled")
    assert sampled.changed("s/300K/f1", scan_file, files) == []
    full = RawChangeCheck(sampled.read_recorded, folder=tmp_path / "state", reach="full")
    assert full.changed("s/300K/f1", scan_file, files) == []
    kept = json.loads((tmp_path / "state/s/300K/f1.json").read_text())["sha256"]
    assert kept == [fingerprint(f, "full")["sha256"] for f in files]
    overwrite_in_place(files[0], SIZE // 14)  # the sampled blind spot
    assert full.changed("s/300K/f1", scan_file, files) == [files[0]]
    with pytest.raises(ValueError, match="reach must be one of"):
        RawChangeCheck(sampled.read_recorded, reach="every")
    # its row of docs/bad-inputs.md (test_workflow.py's rerun matrix: no job planned)
    row = next(ln for ln in (REPO / "docs/bad-inputs.md").read_text().splitlines()
               if ln.startswith("| `reduction.ingest.fingerprint` switched"))
    assert "| the plan | nothing: `Nothing to be done`" in row
    assert "reruns_exactly_what_it_changes[reduction.ingest.fingerprint full]" in row


def test_the_change_marker_is_newer_than_the_scan_file_exactly_while_a_file_differs(
        ingested, tmp_path):
    files, scan_file, make_check = ingested
    check = make_check()
    assert check.marker_input("s/300K/f1", scan_file, files) == ([], [])
    replace_keeping_mtime(files[1], write(tmp_path / "other", 3))
    marker, changed = check.marker_input("s/300K/f1", scan_file, files)
    assert changed == [files[1]]
    assert marker == [rawfiles.raw_change_marker("s/300K/f1", check.folder)]
    assert os.stat(marker[0]).st_mtime_ns > os.stat(scan_file).st_mtime_ns
    assert str(files[1]) in open(marker[0]).read()
    first = open(marker[0]).read()
    check.marker_input("s/300K/f1", scan_file, files)  # seen again: other content (Snakemake
    assert open(marker[0]).read() != first              # skips an input it has seen)
    # the change undone before ingest ran again: the marker goes (the inputs are those
    # ingest recorded again)
    replace_keeping_mtime(files[1], write(tmp_path / "f2 again", 2))
    assert check.marker_input("s/300K/f1", scan_file, files) == ([], [])
    # a change that ingest saw (ingest ran with the marker as its input), then another one
    # undone: the marker stays an input, older than the scan file
    replace_keeping_mtime(files[1], write(tmp_path / "other", 3))
    assert check.marker_input("s/300K/f1", scan_file, files) == (marker, [files[1]])
    check = make_check()
    replace_keeping_mtime(files[1], write(tmp_path / "other again", 4))
    assert check.marker_input("s/300K/f1", scan_file, files) == (marker, [files[1]])
    replace_keeping_mtime(files[1], write(tmp_path / "other", 3))
    assert check.marker_input("s/300K/f1", scan_file, files) == (marker, [])
    assert os.stat(marker[0]).st_mtime_ns < os.stat(scan_file).st_mtime_ns


def test_two_entries_with_the_same_data_are_refused_unless_deliberate(tmp_path):
    h5 = write(tmp_path / "f1.h5", 1)
    os.link(h5, tmp_path / "f1_again.h5")
    shutil.copyfile(h5, tmp_path / "f1_copy.h5")
    owners = RawFileOwners()
    owners.claim_content("s/300K/f1", [str(h5)], "/entry/data/data")
    owners.claim_content("s/300K/f1", [str(h5)], "/entry/data/data")  # the same entry: fine
    owners.claim_content("s/300K/f2", [str(h5)], "/entry/other")  # another dataset: fine
    for name in ("f1_again.h5", "f1_copy.h5"):
        with pytest.raises(ValueError, match=rf"{name} holds the same data as the files of "
                           r"s/300K/f1 .* list s/300K/f3 in reduction.ingest.deliberate_repeats"):
            owners.claim_content("s/300K/f3", [str(tmp_path / name)], "/entry/data/data")
    owners.claim_content("s/300K/f3", [str(tmp_path / "f1_copy.h5")], "/entry/data/data",
                         repeats={"s/300K/f3"})
    frames = [write(tmp_path / f"a_{i}.cbf", 10 + i) for i in range(3)]
    copies = [shutil.copyfile(f, tmp_path / f"b_{i}.cbf") for i, f in enumerate(frames)]
    owners.claim_content("s/100K/f1", [str(f) for f in frames])
    with pytest.raises(ValueError, match=r"b_0\.cbf \.\.\. holds the same data"):
        owners.claim_content("s/100K/f2", [str(f) for f in copies])


@pytest.mark.slow
def test_snakemake_plans_an_entry_whose_raw_file_was_replaced_with_its_mtime_kept(tiny_copy):
    """Defect 3 through Snakemake: `snakemake -n` plans the entry's ingest (and what follows
    it) again, and nothing once the original bytes are back; a hard link of one entry's file
    given to another entry stops the plan."""
    d = tiny_copy
    raw = d / "raw/tiny/300K/f2.h5"
    scans = [f"results/tiny/{t}/{e}/scan.nxs" for t in ("300K", "100K") for e in ("f1", "f2")]
    assert run_snakemake(d, "--cores", "2", *scans).returncode == 0
    original = shutil.copy2(raw, d / "f2 original")
    other = d / "other.h5"
    shutil.copyfile(raw, other)
    overwrite_in_place(other, os.stat(other).st_size - 64)  # other data, the same size
    replace_keeping_mtime(raw, other)
    out = run_snakemake(d, "-n", "--cores", "1", *scans)
    assert out.returncode == 0, out.stderr
    assert "tiny/300K/f2: raw/tiny/300K/f2.h5 changed since ingest" in out.stdout + out.stderr
    assert job_counts(out.stdout) == {"ingest_scan": 1, "total": 1}
    assert "reason: Updated input files: .snakemake/hklflow/raw/tiny/300K/f2.changed" in out.stdout
    replace_keeping_mtime(raw, original)
    out = run_snakemake(d, "-n", "--cores", "1", *scans)
    assert "Nothing to be done" in out.stdout, out.stdout
    # the same data as another entry (a hard link)
    (d / "raw/tiny/300K/f2.h5").unlink()
    os.link(d / "raw/tiny/300K/f1.h5", d / "raw/tiny/300K/f2.h5")
    out = run_snakemake(d, "-n", "--cores", "1")
    assert out.returncode != 0
    assert ("scans.tsv: row 2 (tiny/300K/f2): field 'data': raw/tiny/300K/f2.h5 holds the same "
            "data as the files of tiny/300K/f1") in out.stdout + out.stderr
