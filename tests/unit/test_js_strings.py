"""Every text the pages' scripts translate (``t("…")``, ``tn(n, "…", "…")``) is in the catalogue
its page sends (web/pages*.py): a key missing there would stay English in every language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from web.pages import JS_STRINGS
from web.pages_segments import SEGMENT_STRINGS
from web.pages_staff import STAFF_STRINGS

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
_LIT = r'"(?:[^"\\]|\\.)*"'
_TEXT = rf"{_LIT}(?:\s*\+\s*{_LIT})*"  # a literal, or literals joined with +
_T = re.compile(rf"\bt\(\s*({_TEXT})")
_TN = re.compile(rf"\btn\(\s*[^,()]+(?:\([^()]*\))?\s*,\s*({_TEXT})\s*,\s*({_TEXT})")
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)

PAGES = {
    "console": set(JS_STRINGS),
    "staff": set(JS_STRINGS + STAFF_STRINGS),
    "segments": set(JS_STRINGS + SEGMENT_STRINGS),
}
SCRIPTS = {
    "common.js": ("console", "staff", "segments"),
    "console.js": ("console",),
    "supervisor.js": ("staff",),
    "admin.js": ("staff",),
} | {path.name: ("segments",) for path in STATIC.glob("segments*.js")}


def _text(joined: str) -> str:
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', joined)).replace('\\"', '"')


def translated(source: str) -> set[str]:
    code = _COMMENT.sub("", source)
    keys = {_text(m[1]) for m in _T.finditer(code)}
    for m in _TN.finditer(code):
        keys |= {_text(m[1]), _text(m[2])}
    return keys


def test_the_parser_finds_keys() -> None:
    source = 't("a"); tn(items.length, "{n} x", "{n} xs"); t("b, " +\n "c"); /* t("no") */'
    assert translated(source) == {"a", "{n} x", "{n} xs", "b, c"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_key_is_in_its_pages_catalogue(script: str) -> None:
    keys = translated((STATIC / script).read_text(encoding="utf-8"))
    for page in SCRIPTS[script]:
        assert not keys - PAGES[page], f"{script} on the {page} page: {sorted(keys - PAGES[page])}"


def test_every_script_is_checked() -> None:
    assert {p.name for p in STATIC.glob("*.js")} == set(SCRIPTS)
    found = set().union(*(translated((STATIC / s).read_text(encoding="utf-8")) for s in SCRIPTS))
    assert len(found) > 150, "the parser finds few keys: has the scripts' style changed?"
