"""The README and the documentation pages (docs/*.md) against the code: every `advrec-train`
command they print composes against today's configs (a renamed preset, tuned file or option
breaks this test, not a reader's first try), and the config-group table lists exactly the
options conf/ has. A sweep's values (`seed=1,2,3`, `a|b` for "either", `choice(...)`) compose
with their first value; commands with placeholders (`<name>`, `N`, `...`) or a user's own
files (`mygan`) are left out. CI builds the site itself with `mkdocs build --strict`."""

import re
import shlex

import pytest

from tests.helpers import REPO

PLACEHOLDERS = ("<", "...", " N", "=N", "mygan", "my_conf", "--")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_commands() -> list[str]:
    text = "\n".join(p.read_text() for p in PAGES)
    found = [" ".join(m.group(1).split()) for m in re.finditer(r"`(advrec-train[^`]*)`", text)]
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("advrec-train"):
                found.append(" ".join(line.split("  #")[0].split()))
    return sorted({c for c in found if not any(p in c for p in PLACEHOLDERS)})


def _first(value: str) -> str:
    """The first value of a sweep: top-level commas, `|` alternatives, choice(...)."""
    if m := re.fullmatch(r"choice\((.*)\)", value):
        value = m.group(1)
    depth = 0
    for i, ch in enumerate(value):
        depth += (ch in "[{(") - (ch in "]})")
        if depth == 0 and ch in ",|":
            return value[:i]
    return value


def as_overrides(command: str) -> list[str]:
    out = []
    for arg in shlex.split(command)[1:]:
        if arg != "-m":
            key, _, value = arg.partition("=")
            out.append(f"{key}={_first(value)}")
    return out


def test_the_parser_takes_a_sweeps_first_value():
    cmd = "advrec-train -m a=1,2 'b={x:[1,2]}' c/d=none|median 'e=choice(3,4)'"
    assert as_overrides(cmd) == ["a=1", "b={x:[1,2]}", "c/d=none", "e=3"]
    assert len(doc_commands()) > 40  # the pages' commands were found at all


@pytest.mark.parametrize("command", doc_commands(), ids=lambda c: c[13:70])
def test_every_documented_command_composes(command):
    from hydra import compose, initialize_config_dir

    from advrec.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        compose("train", as_overrides(command), return_hydra_config=True)


def test_the_group_table_lists_every_option_conf_has():
    """docs/configuration.md's table: each group's backticked options are its conf/ files."""
    text = (REPO / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (.*) \|$", text, re.M)
    assert {"data", "model", "protocol", "trainer", "logger", "experiment"} <= {g for g, _ in rows}
    for group, cell in rows:
        files = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
        named = set(re.findall(r"`(\w+)`", cell))
        assert named - files == set(), (group, "no such file:", named - files)
        if group not in ("tuned", "debug"):  # those two are described in words
            assert files - named == set(), (group, "missing from the table:", files - named)
