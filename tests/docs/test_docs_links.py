"""The documents a user reads stay navigable and short: every relative link (and its #anchor) resolves
inside the repository, BENCHMARKS.md stays a report, and README paragraphs stay readable."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL: not checked here
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    return broken


def test_relative_links_and_anchors_resolve_inside_the_repository():
    broken = {str(p.relative_to(ROOT)): links for p in DOCUMENTS if (links := _broken_links(p))}
    assert broken == {}


def test_benchmarks_md_is_a_report_of_at_most_30_kb():
    assert (ROOT / "BENCHMARKS.md").stat().st_size <= 30_000


def test_readme_paragraphs_are_at_most_100_words():
    text = FENCE.sub("", (ROOT / "README.md").read_text())
    prose = [
        " ".join(line for line in block.splitlines() if not line.startswith(("|", "    ", "#")))
        for block in re.split(r"\n\s*\n", text)
    ]
    assert max(len(p.split()) for p in prose) <= 100
