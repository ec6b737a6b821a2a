"""lsap.utils.logging: timestamped lines, info on stdout from rank 0 only, warnings on stderr."""

import re

from lsap.utils.logging import get_logger

LINE = re.compile(r"^\d\d:\d\d:\d\d lsap: ")


def test_info_stdout_warning_stderr(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    log = get_logger("lsap.data.shards")
    log.info("wrote %s", "x")
    log.warning("[lsap] warning: the val split is empty")
    log.warning("plain")
    out, err = capsys.readouterr()
    assert LINE.match(out) and out.endswith("lsap: wrote x\n"), out
    lines = err.splitlines()
    assert len(lines) == 2 and all(LINE.match(ln) for ln in lines), err
    assert lines[0].endswith(
        "lsap: warning: the val split is empty"
    )  # old tag dropped, not doubled
    assert lines[1].endswith("lsap: warning: plain")


def test_rank0_only_for_info(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    log = get_logger(__name__)
    log.info("hidden")
    log.warning("shown")
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("lsap: warning: shown\n")
    assert get_logger("x").name == "lsap.x" and get_logger().name == "lsap"
