"""The front page and docs/: every relative link resolves, the README stays a front page, and
every command line of the README names a script or module that exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    for doc in ("training", "recipes", "decoding", "quality", "performance", "gpu", "testing"):
        assert f"(docs/{doc}.md)" in text, doc
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_readme_commands_name_files_that_exist():
    text = (ROOT / "README.md").read_text()
    for path in re.findall(r"(?:python|bash) ((?:scripts|bench)/\w+\.(?:py|sh)|\w+\.py)", text):
        assert (ROOT / path).is_file(), path
    for module in re.findall(r"python -m (diffuseq(?:\.\w+)+)", text):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


def test_ci_runs_the_readme_test_command():
    text = (ROOT / "README.md").read_text()
    command = "pip install -r requirements.txt && python -m pytest -q"
    assert command in text
    assert command in (ROOT / ".ci" / "run").read_text()
