""".dockerignore keeps secrets and local state out of the image, and lets in what the Dockerfile needs.

There is no Docker engine on the test machines, so the rules are read the way Docker's
builder reads them (moby/patternmatcher: patterns anchored at the context root, ``**``
for any folders, ``!`` to re-include, the last matching rule wins, a rule that matches a
folder matches everything under it) and checked against the Dockerfile's ``COPY`` sources,
the files the package install and the DAGs need, and the secrets and local state a
developer's checkout holds.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# what a checkout holds that must never reach a layer (created by make, Airflow, the tests, git)
SECRET_AND_LOCAL_PATHS = [
    ".env",
    "deploy/.env",
    ".env.local",
    ".airflow/simple_auth_manager_passwords.json.generated",
    ".airflow/airflow.cfg",
    ".airflow-test_h2/airflow.db",
    ".work/online-retail/20261123T000000Z/split.parquet",
    ".run/moto.pid",
    ".git/config",
    ".venv/bin/python",
    ".venv-dbt/bin/dbt",
    ".venv-compose/bin/docker-compose",
    "plugins/recsys_pipeline/__pycache__/settings.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    "dbt_project/target/manifest.json",
    "dbt_project/logs/dbt.log",
    "logs/scheduler/latest",
]
# what the image needs besides the Dockerfile's explicit COPY sources (pip install -e, the DAGs, dbt, GX)
NEEDED_FOLDERS = ("plugins", "ml", "dags", "dbt_project", "expectations", "scripts")


def _pattern_regex(pattern: str) -> re.Pattern:
    """One rule as Docker compiles it: ``**/`` any folders, ``**`` anything, ``*`` and ``?`` within a name."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(.*/)?" if i < len(pattern) else ".*"
            else:
                out += ".*"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        i += 1
    return re.compile(f"^{out}$")


def read_rules(path: Path) -> list[tuple[bool, re.Pattern]]:
    """(is an exception, compiled pattern) per rule, in file order."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line[1:].strip() if exception else line
        pattern = re.sub(r"/+", "/", pattern).strip("/") or "."
        rules.append((exception, _pattern_regex(pattern)))
    return rules


def ignored(rules: list[tuple[bool, re.Pattern]], path: str) -> bool:
    """Whether the builder leaves ``path`` (relative, with /) out of the context."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for exception, regex in rules:
        if regex.match(path) or any(regex.match(parent) for parent in candidates[:-1]):
            result = not exception
    return result


@pytest.fixture(scope="module")
def rules():
    path = PROJECT_ROOT / ".dockerignore"
    assert path.exists(), "no .dockerignore: `COPY . /opt/recsys/` would send .env, .airflow/, .work/ and .git"
    return read_rules(path)


def copy_sources(dockerfile: Path) -> list[str]:
    """The local sources of every ``COPY`` of the Dockerfile (``--from`` copies excepted)."""
    sources = []
    for line in re.sub(r"\\\n", " ", dockerfile.read_text()).splitlines():
        if not line.strip().upper().startswith("COPY "):
            continue
        words = shlex.split(line)
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_the_matcher_reads_rules_the_way_docker_does(tmp_path):
    (tmp_path / ".dockerignore").write_text("# comment\n.env\n**/*.pyc\nsecrets\n!secrets/public.txt\n/build/\n")
    rules = read_rules(tmp_path / ".dockerignore")
    assert ignored(rules, ".env") and not ignored(rules, "deploy/.env")  # anchored at the root
    assert ignored(rules, "a/b/c.pyc") and ignored(rules, "c.pyc")
    assert ignored(rules, "secrets/key") and not ignored(rules, "secrets/public.txt")
    assert ignored(rules, "build/lib/x.py") and not ignored(rules, "plugins/build.py")


def test_secrets_and_local_state_never_reach_the_image(rules):
    leaked = [path for path in SECRET_AND_LOCAL_PATHS if not ignored(rules, path)]
    assert not leaked, f"sent to the Docker build context (and so into a layer): {leaked}"


def test_everything_git_ignores_in_this_checkout_stays_out_too(rules):
    """.gitignore lists the local state `make` and the tests create: none of it belongs in an image."""
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    leaked = [path.rstrip("/") for path in listed if not ignored(rules, path.rstrip("/"))]
    assert not leaked, f"git ignores these but the image would get them: {leaked}"


def test_what_the_dockerfile_copies_is_sent(rules):
    sources = copy_sources(PROJECT_ROOT / "Dockerfile")
    assert "." in sources and "requirements.txt" in sources
    for source in (s for s in sources if s != "."):
        assert (PROJECT_ROOT / source).exists(), f"the Dockerfile copies {source}, which is not in the checkout"
        assert not ignored(rules, source), f"the Dockerfile copies {source}, which .dockerignore leaves out"


def test_the_package_the_dags_and_dbt_are_sent(rules):
    tracked = subprocess.run(
        ["git", "ls-files", *NEEDED_FOLDERS, "pyproject.toml", "README.md"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert any(p.startswith("dbt_project/tests/") for p in tracked)  # dbt's own tests folder is needed
    missing = [path for path in tracked if ignored(rules, path)]
    assert not missing, f"the image needs these but .dockerignore leaves them out: {missing}"
