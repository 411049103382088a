"""Relative links in README.md and docs/*.md point at files that exist."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "packages").glob("*/README.md")])
# [text](target) and [text](target "title"); images too; not inside `code`
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"```.*?```", re.S)
CODE = re.compile(r"`[^`\n]*`")


def relative_links(path):
    text = CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s)://, mailto:, in-page anchors
        yield target


def test_the_docs_are_found():
    assert len(DOCS) > 10


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc):
    broken = [t for t in relative_links(doc)
              if not (doc.parent / t.split("#")[0]).resolve().exists()]
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files: {broken}"
