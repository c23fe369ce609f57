"""Output paths: checked before any work, only regular files written, with the permissions open() would give.

These run as root too (CI and the GPU runners are root): root may write anything, so what kvbench refuses must be
refused by kvbench itself (a device node, a FIFO, a socket, a directory), and a directory where nothing can be
created is found by trying (/proc refuses root as well)."""

import json
import os
import socket
import stat

import pytest

from kvbench import cli, files
from kvbench.errors import FileProblem

SMALL = ["sweep", "--device", "cpu", "--num-heads", "4", "--num-blocks", "64", "--iters", "3", "--num-tokens", "16",
         "--implementation", "torch"]


def _sweep(capsys, *extra):
    code = cli.main([*SMALL, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path):
    path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    yield path
    s.close()


def test_a_device_node_is_refused_before_any_work_and_left_as_it_was(capsys):
    code, err = _sweep(capsys, "--json", "/dev/null")
    assert code == 3 and "'/dev/null' is a character device, not a regular file" in err, err
    assert "Benchmark results" not in capsys.readouterr().out
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("kind, words", [("fifo", "is a FIFO"), ("unix_socket", "is a socket")])
def test_fifos_and_sockets_are_refused_and_left_as_they_were(capsys, request, kind, words):
    path = request.getfixturevalue(kind)
    before = os.stat(path).st_mode
    code, err = _sweep(capsys, "--csv", str(path))
    assert code == 3 and words in err and "not a regular file" in err, err
    assert os.stat(path).st_mode == before


def test_a_directory_or_a_link_to_one_is_refused(capsys, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    for path in (tmp_path / "d", tmp_path / "link"):
        code, err = _sweep(capsys, "--json", str(path))
        assert code == 3 and "is a directory; give a file name" in err, err


def test_a_link_to_a_device_is_refused(capsys, tmp_path):
    (tmp_path / "null").symlink_to("/dev/null")
    code, err = _sweep(capsys, "--json", str(tmp_path / "null"))
    assert code == 3 and "is a character device" in err
    assert os.readlink(tmp_path / "null") == "/dev/null"


def test_a_link_to_a_file_is_followed_and_stays_a_link(capsys, tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert _sweep(capsys, "--json", str(link))[0] == 0
    assert link.is_symlink() and json.loads(target.read_text())["results"][0]["status"] == "ok"


def test_a_dangling_link_creates_the_file_it_names(capsys, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "new.json")
    assert _sweep(capsys, "--json", str(link))[0] == 0
    assert link.is_symlink() and (tmp_path / "new.json").is_file()


def test_a_directory_where_nothing_can_be_created_is_found_before_any_work(capsys):
    code, err = _sweep(capsys, "--json", "/proc/self/kvbench.json")  # refused to root too
    assert code == 3 and "cannot create files in '/proc/" in err, err


def test_a_parent_that_is_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    code, err = _sweep(capsys, "--json", str(tmp_path / "f" / "r.json"))
    assert code == 3 and "is not a directory" in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may create files in a read-only directory")
def test_a_read_only_directory(capsys, tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    code, err = _sweep(capsys, "--json", str(d / "r.json"))
    assert code == 3 and "cannot create files in" in err and "Permission denied" in err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with files.atomic(tmp_path / "new.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == mode


def test_an_existing_file_keeps_its_mode_and_owner(tmp_path):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 12345, 23456)
    with files.atomic(path) as f:
        f.write("new")
    st = os.stat(path)
    assert path.read_text() == "new" and stat.S_IMODE(st.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (12345, 23456)


def test_a_path_that_became_a_fifo_during_the_work_is_not_replaced(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(FileProblem, match="is a FIFO"):
        with files.atomic(path) as f:
            os.mkfifo(path)  # appears after the check, before the rename
            f.write("{}")
    assert stat.S_ISFIFO(os.stat(path).st_mode) and os.listdir(tmp_path) == ["r.json"]


def test_when_the_output_cannot_be_written_after_the_sweep_the_results_are_kept(capsys, tmp_path, monkeypatch):
    out = tmp_path / "gone" / "r.json"
    out.parent.mkdir()
    from kvbench.cli import sweep

    measured = sweep._row

    def row_then_remove_the_directory(*args):
        result = measured(*args)
        out.parent.rmdir()
        return result

    monkeypatch.setattr(sweep, "_row", row_then_remove_the_directory)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    code, err = _sweep(capsys, "--json", str(out))
    assert code == 3 and "cannot be written" in err and "the 1 cases are in" in err, err
    rescue = err.rsplit(" ", 1)[-1]
    assert rescue.startswith(str(tmp_path)) and json.loads(open(rescue).read())["results"][0]["status"] == "ok"
