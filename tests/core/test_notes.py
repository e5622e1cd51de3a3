"""The library returns notes; the stage that asked prints them under its name."""

from __future__ import annotations

from imgpipe.core.notes import Note, say


def test_a_stage_says_its_notes_on_stdout_and_its_warnings_on_stderr(capsys):
    say("evaluate", [Note("3 label(s) have no test example"), Note("1 class(es) have no test image", warning=True)])
    out, err = capsys.readouterr()
    assert out == "evaluate: 3 label(s) have no test example\n"
    assert err == "evaluate: warning: 1 class(es) have no test image\n"
