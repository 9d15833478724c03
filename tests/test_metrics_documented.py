"""Every metric the gateway creates and every log event it names has its row
in the README (Operations > Metrics, Operations > Logs), and no row names
one that is gone."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PACKAGE = ROOT / "shardstream"
# prometheus_client's metric classes, and how the exposition names a sample
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram",
         "Summary": "summary", "Info": "info", "Enum": "stateset"}


def _section(title: str) -> str:
    """The README text under ``### title`` (in ## Operations), to the next heading."""
    text = README.read_text()
    operations = text.index("\n## Operations\n")
    start = text.index(f"\n### {title}\n", operations)
    end = re.compile(r"^#{1,3} ", re.MULTILINE).search(text, start + len(title) + 6)
    return text[start:end.start() if end else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    """The body rows of the section's markdown tables, as cells."""
    rows = []
    lines = section.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|[-:| ]+\|", line.strip()):
            continue  # prose, or the |---| line
        if i + 1 < len(lines) and re.fullmatch(r"\|[-:| ]+\|", lines[i + 1].strip()):
            continue  # a table's header
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _created_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Name -> (type, label names) of every metric ``Metrics()`` creates,
    recorded by stand-ins for prometheus_client's classes (so nothing is
    registered in this process)."""
    import prometheus_client

    from shardstream.observe import metrics as metrics_mod

    made: dict[str, tuple[str, tuple[str, ...]]] = {}

    def stand_in(kind: str) -> Any:
        def make(name: str, documentation: str, labelnames: Any = (), **_: Any) -> Any:
            assert name not in made, f"{name} made twice"
            made[name] = (kind, tuple(labelnames))
            return mock.MagicMock(name=name)
        return make

    with mock.patch.multiple(prometheus_client,
                             **{cls: stand_in(kind) for cls, kind in KINDS.items()}):
        metrics_mod.Metrics()
    return made


def _metric_rows() -> dict[str, list[str]]:
    rows = {}
    for cells in _table_rows(_section("Metrics")):
        name = re.fullmatch(r"`([a-z_:]+)`", cells[0])
        assert name, f"a metric row's first cell is one `name`: {cells[0]!r}"
        assert name.group(1) not in rows, f"two rows for {name.group(1)}"
        rows[name.group(1)] = cells
    return rows


def _logged_events() -> dict[str, list[str]]:
    """Event name -> where (file:line) of every ``event="..."`` given to a
    call anywhere in the package."""
    events: dict[str, list[str]] = {}
    not_literal = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg != "event":
                    continue
                where = f"{path.relative_to(ROOT)}:{kw.value.lineno}"
                if isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                    events.setdefault(kw.value.value, []).append(where)
                else:
                    not_literal.append(where)
    # a computed name could not be checked against the table: keep them literal
    assert not not_literal, f"event= not a string literal at {not_literal}"
    return events


def _event_rows() -> set[str]:
    names: set[str] = set()
    for cells in _table_rows(_section("Logs")):
        found = re.findall(r"`([a-z_]+)`", cells[0])
        assert found, f"a log row's first cell names its events: {cells[0]!r}"
        names.update(found)
    return names


def test_every_metric_created_has_a_readme_row_with_its_type_and_labels():
    made = _created_metrics()
    # the stand-ins saw every metric the source creates
    source = (PACKAGE / "observe" / "metrics.py").read_text()
    classes = "|".join(KINDS)
    calls = len(re.findall(rf"\b(?:{classes})\(p \+ \"", source))
    assert len(made) == calls > 20, (sorted(made), calls)
    rows = _metric_rows()
    missing = sorted(set(made) - set(rows))
    assert not missing, f"README ### Metrics has no row for {missing}"
    stale = sorted(set(rows) - set(made))
    assert not stale, f"README ### Metrics has rows for metrics no longer made: {stale}"
    for name, (kind, labels) in made.items():
        cells = rows[name]
        assert cells[1] == kind, f"{name}: README says {cells[1]!r}, the code makes a {kind}"
        bare = cells[2]
        while bare != (bare := re.sub(r"\([^()]*\)", "", bare)):
            pass  # the values in parentheses, innermost first
        named = set(re.findall(r"`([a-z_]+)`", bare))
        assert named == set(labels), (
            f"{name}: README's labels {sorted(named)}, the code's {sorted(labels)}")
        assert cells[3], f"{name}: no meaning"


def test_every_event_logged_has_a_readme_row():
    events = _logged_events()
    assert {"access", "startup", "reload"} <= set(events), sorted(events)
    documented = _event_rows()
    missing = {name: events[name] for name in sorted(set(events) - documented)}
    assert not missing, f"README ### Logs has no row for these events (logged at): {missing}"
    stale = sorted(documented - set(events))
    assert not stale, f"README ### Logs has rows for events nothing logs: {stale}"


@pytest.mark.parametrize("title", ["Metrics", "Logs"])
def test_the_sections_are_found(title):
    assert _table_rows(_section(title))
