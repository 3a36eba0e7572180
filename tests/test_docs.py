"""The documentation: the generated configuration reference covers the whole schema, and the README stays short
with working links. (`make docs` builds the site with warnings as errors; CI runs it.)"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import typing
from dataclasses import field
from pathlib import Path

from rkd.config import RunConfig, load_config
from rkd.config.coerce import PosInt, Str
from rkd.config.schema import section

REPO = Path(__file__).resolve().parents[1]


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", REPO / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


config_reference = _hook("config_reference")


def field_paths(cls: type, prefix: str = "") -> list[str]:
    """Every field of a config class and of the sections below it, as dotted paths."""
    paths, hints = [], typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        path = prefix + item.name
        paths.append(path)
        if dataclasses.is_dataclass(hints[item.name]):
            paths += field_paths(hints[item.name], path + ".")
    return paths


def rows(markdown: str) -> dict[str, list[str]]:
    """{dotted field: its table cells} of a generated reference."""
    found = {}
    for line in markdown.splitlines():
        match = re.match(r"\| `([\w.]+)` \|", line)
        if match:
            found[match.group(1)] = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
    return found


def test_every_schema_field_is_in_the_configuration_reference():
    reference = rows(config_reference.reference_markdown())
    paths = field_paths(RunConfig)
    assert len(paths) > 150 and "search.train.lr" in paths
    missing = [path for path in paths if path not in reference]
    assert not missing, f"fields missing from the generated configuration reference: {missing}"
    assert set(reference) == set(paths)
    for path, cells in reference.items():
        assert len(cells) == 6 and cells[1] and cells[2] and cells[3], f"{path}: a row without type/accepted/default"


def test_reference_rows_carry_type_choices_defaults_and_the_packaged_value():
    reference = rows(config_reference.reference_markdown())
    assert "one of `resnet`, `regnet`, `convnext`" in reference["teacher.embedded_family"][2]
    assert reference["teacher.embedded_family"][3] == "`resnet`"
    assert reference["teacher.embedded_family"][4] == f"`{load_config('default').teacher.embedded_family}`"
    assert "between 0 and 1" in reference["data.val_fraction"][2]
    assert reference["data.max_train"][1] == "int or null"
    # nested sections carry their own defaults: stage1 and stage2 are both TrainConfig
    assert reference["stage1.lr"][3] == f"`{RunConfig().stage1.lr}`"
    assert reference["stage2.lr"][3] == f"`{RunConfig().stage2.lr}`"


@section
class _ToySection:
    """A section that exists only in this test."""

    # how many widgets the toy makes
    widgets: PosInt = 3
    label: Str = "x"  # what the toy is called


@section
class _ToyConfig:
    toy: _ToySection = field(default_factory=_ToySection)  # the toy's settings


def test_a_new_field_appears_with_its_comments():
    markdown = config_reference.reference_markdown(_ToyConfig, packaged=None)
    reference = rows(markdown)
    assert set(reference) == {"toy", "toy.widgets", "toy.label"}
    assert reference["toy.widgets"][1:4] == ["int", "an integer &gt;= 1", "`3`"]
    assert reference["toy.widgets"][5] == "how many widgets the toy makes"
    assert reference["toy.label"][5] == "what the toy is called"
    assert "A section that exists only in this test." in markdown and "the toy's settings" in markdown


def test_readme_is_short_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for command in ("make run", "make test"):  # the two set-up commands; .ci/run calls make test
        assert command in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"
