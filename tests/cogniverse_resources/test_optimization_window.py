from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from cogniverse_resources.optimization_window import InvalidWindow, OptimizationWindow
from cogniverse_resources.tenant import RoutingConfig


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        ("2026-11-27T00:59:59", False),
        ("2026-11-27T01:00:00", True),
        ("2026-11-27T04:59:59", True),
        ("2026-11-27T05:00:00", False),
        ("2026-11-27T13:00:00", False),
    ],
)
def test_a_window_includes_its_start_and_excludes_its_end(moment, inside):
    assert OptimizationWindow.parse("01:00-05:00").contains(utc(moment)) is inside


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        ("2026-11-27T21:59:00", False),
        ("2026-11-27T22:00:00", True),
        ("2026-11-27T23:59:00", True),
        ("2026-11-28T00:00:00", True),
        ("2026-11-28T01:59:00", True),
        ("2026-11-28T02:00:00", False),
        ("2026-11-28T12:00:00", False),
    ],
)
def test_a_window_across_midnight(moment, inside):
    assert OptimizationWindow.parse("22:00-02:00").contains(utc(moment)) is inside


def test_a_window_is_judged_in_its_time_zone():
    # 01:00-05:00 in Tokyo (UTC+9) is 16:00-20:00 UTC the day before.
    window = OptimizationWindow.parse("01:00-05:00", "Asia/Tokyo")
    assert window.contains(utc("2026-11-27T16:30:00"))
    assert not window.contains(utc("2026-11-27T01:30:00"))


def test_the_next_opening_is_today_or_tomorrow_in_local_time():
    window = OptimizationWindow.parse("01:00-05:00", "Europe/Berlin")  # UTC+1 in November
    assert window.next_opening(utc("2026-11-27T12:00:00")) == utc("2026-11-28T00:00:00")
    assert window.next_opening(utc("2026-11-27T23:30:00")) == utc("2026-11-28T00:00:00")
    reason = window.closed_reason(utc("2026-11-27T12:00:00"))
    assert reason == (
        "outside optimization window 01:00-05:00 Europe/Berlin (opens in 12h00m, at 2026-11-28T01:00:00+01:00)"
    )


def test_the_wait_counts_real_hours_across_a_daylight_saving_change():
    # Europe/Berlin leaves summer time on 2026-10-25 at 03:00 local: that night has 25 hours.
    window = OptimizationWindow.parse("06:00-07:00", "Europe/Berlin")
    moment = utc("2026-10-24T22:00:00")  # 00:00 local, summer time (UTC+2)
    assert window.next_opening(moment) == utc("2026-10-25T05:00:00")  # 06:00 local, winter time (UTC+1)
    assert "opens in 7h00m" in window.closed_reason(moment)


def test_an_end_of_24_00_means_midnight():
    window = OptimizationWindow.parse("20:00-24:00")
    assert window.contains(utc("2026-11-27T23:59:00"))
    assert not window.contains(utc("2026-11-27T00:00:00"))
    assert not window.contains(utc("2026-11-27T19:59:00"))


@pytest.mark.parametrize("text", ["1:00-5:00", "01:00", "25:00-02:00", "01:00-05:60", "03:00-03:00", "24:30-01:00"])
def test_malformed_windows_are_refused_with_the_expected_form(text):
    with pytest.raises(InvalidWindow, match="optimization_window"):
        OptimizationWindow.parse(text)


def test_the_tenant_setting_is_validated_when_it_is_set():
    config = RoutingConfig(tenant_id="acme", optimization_window="01:00-05:00", optimization_timezone="Europe/Berlin")
    assert str(config.window()) == "01:00-05:00 Europe/Berlin"
    with pytest.raises(ValidationError, match="HH:MM-HH:MM"):
        config.optimization_window = "1am-5am"
    with pytest.raises(ValidationError, match="unknown time zone 'Berlin'.*Europe/Berlin"):
        config.optimization_timezone = "Berlin"
    assert config.window() is not None and config.optimization_timezone == "Europe/Berlin"  # unchanged


def test_an_empty_window_setting_means_any_time():
    config = RoutingConfig(tenant_id="acme", optimization_window="  ")
    assert config.optimization_window is None and config.window() is None
