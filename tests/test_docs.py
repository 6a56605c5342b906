"""The docs keep up with the code: every command has help and a place in the README."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lookalike.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in main.commands if f"lookalike {name}" not in readme]
    assert missing == []


def test_every_command_has_a_help_text() -> None:
    for name, command in main.commands.items():
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and command.get_short_help_str().strip(), name


def test_every_module_is_on_the_architecture_map() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "src" / "lookalike"
    modules = [p.name for p in package.rglob("*.py") if p.name != "__init__.py" and p.parent.name != "cli"]
    modules += [p.name for p in (package / "cli").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert [m for m in modules if f"`{m}`" not in architecture] == []


def test_the_readme_starts_with_the_two_commands() -> None:
    first_block = (ROOT / "README.md").read_text().split("```")[1]
    assert "lookalike demo" in first_block and "pytest" in first_block
