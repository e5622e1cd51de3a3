"""Progress bars draw on a terminal and stay silent when stderr is a log file or CI pipe."""

from __future__ import annotations

import io
import sys

from imgpipe.core.progress import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def consume(monkeypatch, stream: io.StringIO) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    assert list(progress(range(50), desc="work")) == list(range(50))
    return stream.getvalue()


def test_bar_on_a_terminal(monkeypatch):
    assert "work" in consume(monkeypatch, FakeTerminal())


def test_quiet_in_logs(monkeypatch):
    assert consume(monkeypatch, io.StringIO()) == ""
