"""The shared test checks (testbeds/checks.py) and CI's verdict (.ci/run): a skipped test bed
fails under CI, a timing failure names the load and the scale, and a CI run in which nothing
passed (all skipped, or nothing collected) is a failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from testbeds import checks

CI_RUN = Path(__file__).resolve().parents[2] / ".ci" / "run"


def test_skip_or_fail_skips_outside_ci_and_fails_under_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no bed"):
        checks.skip_or_fail("no bed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as raised:  # a skip escaping here would skip this test
        checks.skip_or_fail("no bed")
    assert isinstance(raised.value, pytest.fail.Exception) and "no bed" in str(raised.value), repr(raised.value)


def test_timing_scales_the_bound_and_reports_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(checks.SCALE_ENV, raising=False)
    checks.timing(0.9, 1.0, "x")
    with pytest.raises(AssertionError) as failed:
        checks.timing(1.5, 1.0, "the thing")
    msg = str(failed.value)
    assert "the thing: 1.5, over the bound 1" in msg and "load average" in msg and f"{checks.SCALE_ENV}=1" in msg
    monkeypatch.setenv(checks.SCALE_ENV, "2")
    checks.timing(1.5, 1.0, "the thing")  # within 2 × 1.0
    for bad in ("fast", "0.5"):
        monkeypatch.setenv(checks.SCALE_ENV, bad)
        with pytest.raises(ValueError, match=checks.SCALE_ENV):
            checks.time_scale()


def _ci(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run([str(CI_RUN), "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_ci_fails_when_every_test_skipped(tmp_path: Path) -> None:
    r = _ci(tmp_path, "import pytest\n\ndef test_a():\n    pytest.skip('bed missing')\n")
    assert r.returncode != 0, r.stdout
    assert "ci: no test passed" in r.stdout, r.stdout


def test_ci_fails_when_nothing_was_collected(tmp_path: Path) -> None:
    r = _ci(tmp_path, "def test_a():\n    pass\n", "-k", "no_such_test")
    assert r.returncode != 0, r.stdout
    assert "ci: pytest collected no tests (exit 5)" in r.stdout, r.stdout
