"""A rules file with a mistake is a one-line InputError naming the rule, never an internal
error."""

import datetime as dt

import pytest

from engine.errors import InputError
from indexer.rules import load_rules


@pytest.mark.parametrize("rule, message", [
    ('acquired = "2020-13-45"', "rule 1: acquired '2020-13-45' is not a date (YYYY-MM-DD)"),
    ("acquired = 2020", "rule 1: acquired must be a date"),
    ("date_regex = '(?P<year>\\d{4}'", "rule 1: date_regex is not a regular expression"),
    ("date_regex = '\\d{4}'", "rule 1: date_regex needs a (?P<year>...) group"),
    ('locate = "gps"', "rule 1: locate must be"),
    ('colour = "red"', "rule 1 has unknown keys ['colour']"),
])
def test_a_bad_rule_is_one_line_naming_it(tmp_path, rule, message):
    p = tmp_path / "rules.toml"
    p.write_text(f'[[rule]]\nglob = "*.tif"\n{rule}\n')
    with pytest.raises(InputError) as e:
        load_rules(p)
    assert message in str(e.value) and str(p) in str(e.value)
    assert "\n" not in str(e.value)


def test_dates_as_toml_dates_or_text(tmp_path):
    p = tmp_path / "rules.toml"
    p.write_text('[[rule]]\nglob = "a*"\nacquired = 2020-05-01\n'
                 '[[rule]]\nglob = "b*"\nacquired = "2021-06-02"\n'
                 "[[rule]]\nglob = \"c*\"\ndate_regex = '_(?P<year>\\d{4})(?P<month>\\d{2})'\n")
    a, b, c = load_rules(p)
    assert a.acquired == dt.date(2020, 5, 1) and b.acquired == dt.date(2021, 6, 2)
    from pathlib import Path

    assert c.date_for(Path("c_201907.tif")) == dt.date(2019, 7, 1)
