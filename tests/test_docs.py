"""The reference in docs/ stays true to the code: every setting is documented with its variable and default,
and the README and docs link only to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SETTINGS_DOC = REPO / "docs" / "settings.md"


def _rows() -> dict[str, str]:
    """docs/settings.md's table rows by variable: BNN_X -> the default cell."""
    rows = {}
    for line in SETTINGS_DOC.read_text().splitlines():
        match = re.match(r"^\| `(BNN_[A-Z0-9_]+)` \| ([^|]+) \|", line)
        if match:
            rows[match[1]] = match[2].strip()
    return rows


def _documented_default(value: object) -> str:
    """How the table writes a fixed default."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    field = Settings.model_fields[name]
    variable = f"BNN_{name.upper()}"
    rows = _rows()
    assert variable in rows, f"docs/settings.md has no row `| `{variable}` | default | meaning |`"
    if field.default is PydanticUndefined:  # a default_factory: the table says how it is computed
        assert rows[variable].startswith("computed"), f"{variable}: {rows[variable]!r}"
    else:
        expected = _documented_default(field.default)
        assert rows[variable].startswith(expected), f"{variable}: default {expected}, docs say {rows[variable]!r}"


def test_no_documented_setting_is_gone() -> None:
    fields = {f"BNN_{name.upper()}" for name in Settings.model_fields}
    assert set(_rows()) <= fields, f"docs/settings.md documents settings that do not exist: {set(_rows()) - fields}"


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))])
def test_relative_links_resolve(page: str) -> None:
    path = REPO / page
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{page} links to {target}, which does not exist"
