"""Claims of the chapters: the inequality, its margin, the report and the failure message."""
import json

import pytest

from fts_core.chapters.claims import Claim, check, rate_text, report


def test_claim_holds_and_margin_follow_the_direction():
    assert Claim("a", "x", 9, 8, ">=").holds and Claim("a", "x", 9, 8, ">=").margin == 1
    assert not Claim("a", "x", 8, 8, ">").holds
    assert Claim("a", "x", 0.2, 0.5, "<").margin == pytest.approx(0.3)
    assert not Claim("a", "x", float("nan"), 0, "<=").holds  # NaN never holds
    with pytest.raises(ValueError, match="'=>'"):
        Claim("a", "x", 1, 0, "=>")


def test_check_prints_rates_and_names_every_failing_claim(tmp_path, capsys):
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"runs_described": "seeds 0-4, 2 kernel settings",
                                 "claims": {"good": {"held": 10, "tried": 10}}}))
    good, bad = Claim("good", "holds", 3, 1), Claim("bad", "fails", 0, 1, ">=", "criteria")
    check([good], rates)
    assert "held in 10 of 10 runs (seeds 0-4, 2 kernel settings)" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"bad: 0 >= 1 is false \(margin -1\)"):
        check([good, bad], rates)
    check([good, bad], rates, strict=False)  # reported, not asserted
    assert "[FAILS] fails" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unique"):
        check([good, good])


def test_report_says_not_measured_or_the_given_hold_text():
    c = Claim("k", "claim", 2, 1)
    assert rate_text({}, "k") == "not measured"
    assert report([c]).endswith("held in not measured")
    assert report([c], held="every execution").endswith("held in every execution")
