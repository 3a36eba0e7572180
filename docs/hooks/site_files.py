"""Pages the site takes from the repository at build time, so they follow the code and the results.

- ``<!-- benchmark-scripts -->`` ... ``<!-- /benchmark-scripts -->``: each ``benchmarks/*.py``
  script's docstring (what it measures, how to run it, what it prints); ``<!-- module-map -->`` ...
  ``<!-- /module-map -->``: every package and module of ``rkd`` with the first line of its docstring.
  Between the markers stands a note for readers of the unbuilt file.
- ``results/``: every file of ``benchmarks/results/`` (``HISTORY.md``, the comparison notes, figures,
  JSON), so the results history keeps its relative links and figures.
- ``api/``: one API reference page per package of ``rkd`` (the top-level modules on their own page),
  each a list of mkdocstrings ``::: module`` blocks, found by walking the package's folders; the nav
  entry that points at ``api/index.md`` becomes a section holding them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

API_INDEX = "api/index.md"


def _marked(name: str) -> re.Pattern:
    return re.compile(rf"<!-- {name} -->.*?<!-- /{name} -->", re.DOTALL)


BENCHMARK_SCRIPTS = _marked("benchmark-scripts")
MODULE_MAP = _marked("module-map")


def _root(config) -> Path:
    return Path(config.config_file_path).parent


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def api_groups(root: Path) -> dict[str, list[str]]:
    """{page name: its modules}: ``rkd`` with the top-level modules, then one page per subpackage."""
    groups: dict[str, list[str]] = {"rkd": ["rkd"]}
    for path in sorted((root / "rkd").rglob("*.py")):
        name = _module_name(path, root)
        parts = name.split(".")
        page = "rkd" if len(parts) <= 2 and path.name != "__init__.py" else ".".join(parts[:2])
        groups.setdefault(page, []).append(name)
    return {page: sorted(set(modules), key=lambda m: (m != page, m)) for page, modules in groups.items()}


def _docstring(path: Path) -> str:
    return (ast.get_docstring(ast.parse(path.read_text())) or "").strip()


def as_markdown(text: str) -> str:
    """Docstring prose as markdown text: ``<name>`` outside code spans and indented code shown, not read as HTML."""
    lines = []
    for line in text.splitlines():
        if not line.startswith(("    ", "\t")):
            parts = re.split(r"(``.*?``|`[^`]*`)", line)
            line = "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)
        lines.append(line)
    return "\n".join(lines)


def _summary(root: Path, module: str) -> str:
    """The first line of a module's docstring."""
    path = root / Path(*module.split("."))
    doc = _docstring(path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
    return as_markdown(doc.splitlines()[0]).replace("|", "\\|") if doc else ""


def benchmark_scripts(root: Path) -> str:
    """A section per ``benchmarks/*.py`` script (not the shared ``common.py``): its docstring."""
    sections = []
    for path in sorted((root / "benchmarks").glob("*.py")):
        if path.name != "common.py":
            sections.append(f"### `benchmarks/{path.name}`\n\n{as_markdown(_docstring(path))}\n")
    return "\n".join(sections)


def module_map(root: Path) -> str:
    """A table per package of ``rkd``: each module and the first line of its docstring."""
    tables = []
    for page, modules in api_groups(root).items():
        rows = [f"| [`{module}`](api/{page}.md#{module}) | {_summary(root, module)} |" for module in modules]
        tables.append(f"**`{page}`**\n\n| module | what it is |\n|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(tables)


def _api_page(page: str, modules: list[str]) -> str:
    title = "rkd: the top-level modules" if page == "rkd" else page
    blocks = [f"# {title}\n"]
    for module in modules:
        members = "\n      members: false" if module == page and page != "rkd" else ""
        blocks.append(f"::: {module}\n    options:\n      show_root_heading: true{members}\n")
    return "\n".join(blocks)


def _api_index(root: Path, groups: dict[str, list[str]]) -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings of the package on every build, one page per package.",
        "",
        "| page | modules |",
        "|---|---|",
    ]
    for page, modules in groups.items():
        names = ", ".join(f"`{m.removeprefix(page + '.')}`" for m in modules if m != page)
        lines.append(f"| [{page}]({page}.md): {_summary(root, page)} | {names} |")
    return "\n".join(lines) + "\n"


def on_config(config):
    """Replace the nav entry for the API index with a section of the generated pages."""
    groups = api_groups(_root(config))
    pages = [{"Overview": API_INDEX}] + [{page: f"api/{page}.md"} for page in groups]
    for position, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and API_INDEX in entry.values():
            config.nav[position] = {next(iter(entry)): pages}
    return config


def on_files(files: Files, config) -> Files:
    root = _root(config)
    groups = api_groups(root)
    files.append(File.generated(config, API_INDEX, content=_api_index(root, groups)))
    for page, modules in groups.items():
        files.append(File.generated(config, f"api/{page}.md", content=_api_page(page, modules)))
    results = root / "benchmarks" / "results"
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        files.append(File.generated(config, f"results/{path.relative_to(results).as_posix()}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs hook: replace the marked blocks with what they stand for."""
    root = _root(config)
    markdown = BENCHMARK_SCRIPTS.sub(lambda _: benchmark_scripts(root), markdown)
    return MODULE_MAP.sub(lambda _: module_map(root), markdown)
