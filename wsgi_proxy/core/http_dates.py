"""The HTTP-date grammar of RFC 9110 section 5.6.7, applied strictly. Pure.

Invariants:
- A value is an HTTP-date only when, once the field's leading and trailing whitespace (SP,
  HTAB) is taken off, it is exactly one of the three forms:
      IMF-fixdate    Sun, 06 Nov 1994 08:49:37 GMT
      rfc850-date    Sunday, 06-Nov-94 08:49:37 GMT
      asctime-date   Sun Nov  6 08:49:37 1994
  Day and month names are the ABNF's case-sensitive %s"..." literals (section 5.6.7:
  "HTTP-date is case sensitive"), the zone is "GMT" (none in asctime-date), digits are
  ASCII and exactly as many as the grammar says, each separator is one SP. Anything else
  (another zone, a missing comma, two spaces, a one-digit hour, two dates in one value)
  is not: None. Lenient parsers (werkzeug's ``parse_date``, ``email.utils``) take many such
  values; this one takes none.
- The date must exist: a day the month has, hours 00-23, minutes 00-59, seconds 00-60 (60
  is the leap second of the grammar's comment; POSIX time has none, so it is the next
  minute's first second). The day name is not checked against the date: the grammar does
  not tie them, and section 5.6.7 gives a recipient no rule for a mismatch.
- The two-digit year of an rfc850-date is read as section 5.6.7 says: a date that would be
  more than 50 years after ``reference`` is in the most recent past year with those digits.
- No I/O and no clock: ``reference`` (the caller's now, POSIX seconds) is an argument.
"""

from __future__ import annotations

import calendar
import re
import time

_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS, 1)}
_MONTH = "|".join(_MONTHS)
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
# fullmatch, never "$" (which also matches before a final newline); [0-9], never \d (which
# matches every Unicode digit).
_FORMS = (
    re.compile(  # IMF-fixdate
        rf"(?:{_DAYS}), (?P<day>[0-9]{{2}}) (?P<month>{_MONTH}) (?P<year>[0-9]{{4}}) {_TIME} GMT"
    ),
    re.compile(  # rfc850-date
        rf"(?:{_LONG_DAYS}), (?P<day>[0-9]{{2}})-(?P<month>{_MONTH})-(?P<yy>[0-9]{{2}}) {_TIME} GMT"
    ),
    re.compile(  # asctime-date: date3 = month SP ( 2DIGIT / ( SP DIGIT ))
        rf"(?:{_DAYS}) (?P<month>{_MONTH}) (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})"
    ),
)
_OWS = " \t"
_WINDOW = 50  # years: section 5.6.7's limit for a two-digit year in the future


def parse_http_date(value: str, reference: float) -> float | None:
    """``value`` as POSIX seconds when it is an HTTP-date (RFC 9110 section 5.6.7), else
    None. ``reference`` is now, against which a two-digit year is read."""
    for form in _FORMS:
        match = form.fullmatch(value.strip(_OWS))
        if match is not None:
            break
    else:
        return None
    fields = match.groupdict()
    day, month = int(fields["day"]), _MONTH_NUMBERS[fields["month"]]
    clock = (int(fields["hour"]), int(fields["minute"]), int(fields["second"]))
    if clock[0] > 23 or clock[1] > 59 or clock[2] > 60:
        return None
    if fields.get("yy") is not None:
        year = _full_year(int(fields["yy"]), (month, day, *clock), reference)
    else:
        year = int(fields["year"])
    if not 1 <= day <= _days_in_month(year, month):
        return None
    return float(_timestamp(year, month, day, clock))


def _full_year(yy: int, rest: tuple[int, ...], reference: float) -> int:
    """The year of a two-digit ``yy``: the latest year ending in those digits whose date
    (month, day, hour, minute, second: ``rest``) is at most 50 years after ``reference``."""
    now = time.gmtime(reference)
    limit = (now.tm_year + _WINDOW, now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec)
    year = now.tm_year + (yy - now.tm_year) % 100  # the first such year from now on
    return year if (year, *rest) <= limit else year - 100


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if calendar.isleap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _timestamp(year: int, month: int, day: int, clock: tuple[int, int, int]) -> int:
    """POSIX seconds of a UTC date, for any year the grammar allows (0000 too, which
    ``calendar.timegm`` refuses): days from the civil date, as in H. Hinnant's
    ``days_from_civil``."""
    y = year - (month <= 2)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    hour, minute, second = clock
    return days * 86400 + hour * 3600 + minute * 60 + second
