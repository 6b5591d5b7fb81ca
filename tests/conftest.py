"""Data-needing skips fail the run when ``NSJAX_REQUIRE_DATA=1`` (``.ci/run`` sets it)."""

import os

from _datapaths import SKIP_PREFIX

_data_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and SKIP_PREFIX in str(report.longrepr):
        _data_skips.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _data_skips and os.environ.get("NSJAX_REQUIRE_DATA") == "1":
        print(f"\nNSJAX_REQUIRE_DATA=1: {len(_data_skips)} test(s) skipped for missing data, "
              f"e.g. {_data_skips[0]}; failing the run")
        session.exitstatus = 1
