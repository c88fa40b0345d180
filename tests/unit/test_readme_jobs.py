"""The README's table of jobs is the registry's: `conveyor jobs --markdown` prints it, and this test keeps them equal."""

from pathlib import Path

from shared.cli import jobs_markdown
from shared.jobs import registry

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- jobs:begin (conveyor jobs --markdown) -->", "<!-- jobs:end -->"


def test_the_readme_lists_every_job_as_the_registry_has_it():
    text = README.read_text()
    assert BEGIN in text and END in text, f"README.md lacks the {BEGIN} … {END} block"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == jobs_markdown(registry), "README's job table is stale: paste `conveyor jobs --markdown` into it"
