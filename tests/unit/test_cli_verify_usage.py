"""`audit verify` with no usable key is a usage error naming the option, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from breakglass.cli.main import app

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("args", "named"), [
    (["--key", ""], "--key"),
    (["--key", "   "], "--key"),
    (["--key", "EMPTY"], "--key"),
    (["--key", "MISSING/keys.pub"], "--key"),
    (["--key", "."], "--key"),
    ([], "--export"),  # an export without its key.pub and no --key
])
def test_no_usable_key_is_a_usage_error(tmp_path: Path, args: list[str], named: str) -> None:
    (tmp_path / "EMPTY").write_text("\n")
    export = tmp_path / "export"
    export.mkdir()
    args = [str(tmp_path / a) if a in ("EMPTY", "MISSING/keys.pub") else a for a in args]
    result = CliRunner().invoke(app, ["audit", "verify", "--export", str(export), *args])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, (OSError, ValueError))
