"""The training package's layering, read from its own imports with `ast` (imports inside functions count),
and the map that describes it: training/__init__.py and README's "The map of `training/`" name every
module in the layer LAYERS gives it.

Bottom to top: the foundation (config, families, templates, files and the readers of user files) ->
data/, adapters/, memory/, datasets/ (each only over the foundation) -> model/, retrieval/ (the article
search over datasets/' law corpus) -> trainer/, evaluate/ -> train -> pipeline/ -> demo/ -> __main__
(which imports one command at a time).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "training"
FOUNDATION = {"training", "training.config", "training.families", "training.templates", "training.files",
              "training.safeyaml", "training.userdata", "training.sandbox", "training.strict_json"}
LAYERS = [
    FOUNDATION,
    {"training.data", "training.adapters", "training.memory", "training.datasets"},
    {"training.model", "training.retrieval"},
    {"training.trainer", "training.evaluate"},
    {"training.train"},
    {"training.pipeline"},
    {"training.demo"},
    {"training.__main__"},
]
MAX_TOP_LEVEL_MODULES = 12


def module_name(path: Path) -> str:
    parts = path.relative_to(TRAINING.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every training.* module that `path` imports, at the top or inside a function."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from training.x import module`
    return {name for name in found if name == "training" or name.startswith("training.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in TRAINING.rglob("*.py")}
    return {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


def layer_of(module: str) -> int:
    """The layer of a module: that of its longest matching entry (training.data.read -> training.data)."""
    best = max((entry for layer in LAYERS for entry in layer if module == entry or module.startswith(entry + ".")),
               key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def top_package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_module_has_a_layer():
    assert {name: layer_of(name) for name in graph()}  # raises on a module outside every layer


def test_no_import_runs_up_a_layer():
    upward = [f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
              for src, targets in graph().items() for dst in targets if layer_of(dst) > layer_of(src)]
    assert not upward, "\n".join(upward)


def test_subpackages_of_one_layer_do_not_import_each_other():
    across = [f"{src} imports {dst}" for src, targets in graph().items() for dst in targets
              if layer_of(src) == layer_of(dst) and layer_of(src) > 0 and top_package(src) != top_package(dst)]
    assert not across, "\n".join(across)


def test_no_import_cycle():
    edges, cycles = graph(), []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "training" / "data" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from training.train import train\n    from ..demo import demo\n", encoding="utf-8")
    global TRAINING
    saved, TRAINING = TRAINING, tmp_path / "training"
    try:
        assert imported_modules(module) >= {"training.train", "training.demo", "training.demo.demo"}
    finally:
        TRAINING = saved
    assert layer_of("training.train") > layer_of("training.data.x")


def test_training_has_at_most_twelve_top_level_modules():
    modules = sorted(path.name for path in TRAINING.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


@pytest.mark.parametrize("package", sorted(p.name for p in TRAINING.iterdir() if (p / "__init__.py").is_file()))
def test_the_map_names_every_subpackage(package):
    assert f"{package}/" in (TRAINING / "__init__.py").read_text(encoding="utf-8")


def package_map() -> dict[str, tuple[int, str]]:
    """{entry (`files.py`, `data/`): (layer, description)} from training/__init__.py's map."""
    entries, current = {}, None
    for line in (TRAINING / "__init__.py").read_text(encoding="utf-8").splitlines():
        found = re.match(r"(\d) (\S+\.py|\S+/)\s{2,}(.*)", line)
        if found:
            current = found[2]
            entries[current] = (int(found[1]), found[3])
        elif current and line.startswith(" " * 10) and line.strip():
            layer, text = entries[current]
            entries[current] = (layer, f"{text} {line.strip()}")
        else:
            current = None
    return entries


def readme_map() -> dict[str, tuple[int, str]]:
    """{entry: (layer, the row's text)} from README's table "The map of `training/`"."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("### The map of `training/`", 1)[1]
    entries = {}
    for row in re.findall(r"^\| (\d)[^|]*\| ([^|]*)\| (.*)\|$", section.split("\n\n", 3)[2], flags=re.MULTILINE):
        for entry in re.findall(r"`([^`]+(?:\.py|/))`", row[1]):
            entries[entry] = (int(row[0]), row[2])
    return entries


def entry_of(module: str) -> str:
    """The map entry of a module: `files.py` for training.files, `adapters/` for training.adapters.gguf.x."""
    parts = module.split(".")[1:]
    return parts[0] + ("/" if (TRAINING / parts[0]).is_dir() else ".py")


def layer_number(entry: str) -> int:
    return layer_of("training." + entry.removesuffix(".py").removesuffix("/")) + 1


@pytest.mark.parametrize("described", [package_map, readme_map], ids=["training/__init__.py", "README"])
def test_the_map_names_every_module_in_its_layer(described):
    entries = described()
    tops = {entry_of(name) for name in graph() if name != "training"}
    assert set(entries) == tops
    assert {entry: layer for entry, (layer, _) in entries.items()} == {entry: layer_number(entry) for entry in tops}
    unnamed = [name for name in graph() if name.count(".") > 1
               for leaf in [name.rpartition(".")[2]] if f"`{leaf}`" not in entries[entry_of(name)][1]
               and f"{leaf}/" not in entries[entry_of(name)][1]]
    assert not unnamed, f"modules {described.__name__} does not name (as `module`): {unnamed}"


def test_the_two_maps_list_the_entries_in_the_same_order():
    assert list(package_map()) == list(readme_map())
    assert [layer for layer, _ in package_map().values()] == sorted(layer for layer, _ in package_map().values())
