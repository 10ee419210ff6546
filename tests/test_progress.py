"""The library's one progress bar: a single bar, a group of bars, and nothing drawn when hidden."""

from __future__ import annotations

import pytest

from llmrec.progress import progress, progress_group


def test_hidden_bar_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(False, "work", 3) as advance:
        advance()
        advance(2, status="done")
    with progress_group(False) as add_bar:
        add_bar("rows", None)(5)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_shown_bar_reports_description_count_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(True, "embedding texts", 4, completed=1) as advance:
        advance(3, status="loss 0.123")
    err = capsys.readouterr().err
    assert "embedding texts" in err
    assert "4/4" in err
    assert "loss 0.123" in err


def test_group_shows_every_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_group(True) as add_bar:
        items = add_bar("ds: items", 2)
        interactions = add_bar("ds: interactions", None)
        items(2)
        interactions(7)
        interactions(3, status="streaming")
    err = capsys.readouterr().err
    assert "ds: items" in err and "2/2" in err
    assert "ds: interactions" in err and "10" in err and "streaming" in err
