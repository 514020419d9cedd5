"""Imports run one way (docs/architecture.md): the method, the data, the models and the RL math
below; judges; workers; the trainer; evaluation, test hooks and the CLI on top. A module may
import its own package and the packages below it, never one above (a function-level import
counts too: it is the same dependency, only later)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "grit_ray"
# lowest first; a package may import itself and anything before it
LAYERS = ["config", "schedules", "grit", "data", "models", "algo", "judge", "workers", "trainer", "evaluation", "testing", "cli"]


def layer_of(module: str) -> int:
    """grit_ray.<part>... -> its layer; the package root sits with config at the bottom."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else 0


def grit_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n == "grit_ray" or n.startswith("grit_ray.")]
    return out


def upward_imports(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = "grit_ray." + ".".join(path.relative_to(root).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for line, target in grit_imports(path):
            if layer_of(target) > layer_of(module):
                bad.append(f"{path.relative_to(root.parent)}:{line}: {module} imports {target} "
                           f"({LAYERS[layer_of(module)]} may not import {LAYERS[layer_of(target)]})")
    return bad


def module_name(path: Path, root: Path) -> str:
    return ("grit_ray." + ".".join(path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")


def import_targets(path: Path, modules: set[str]) -> set[str]:
    """The grit_ray modules ``path`` names in its imports (``from pkg import sub`` names pkg.sub when
    that is a module). The parent packages Python imports on the way are not counted: a package's
    ``__init__`` re-exporting its modules is not a cycle."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("grit_ray"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out |= subs or ({node.module} & modules)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names} & modules
    return out


def import_cycles(root: Path) -> list[str]:
    """Every cycle of imports between grit_ray modules (function-level imports count), as
    'a -> b -> a'; one per strongly connected set of modules."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {m: import_targets(p, set(paths)) - {m} for m, p in paths.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [m, t]) if t in stack else f"{m} -> {t}")
            elif t not in state:
                visit(t, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return cycles


def test_no_import_cycles_inside_a_package():
    assert import_cycles(PACKAGE) == []


def test_an_import_cycle_is_caught(tmp_path):
    # models/tiny/build imports pretrain, which reaches back into build for a helper
    pkg = tmp_path / "grit_ray" / "models" / "tiny"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from grit_ray.models.tiny.build import build\n")
    (pkg / "build.py").write_text("from grit_ray.models.tiny.pretrain import pretrain\n")
    (pkg / "pretrain.py").write_text("def pretrain():\n    from grit_ray.models.tiny import build\n")
    cycles = import_cycles(tmp_path / "grit_ray")
    assert cycles == ["grit_ray.models.tiny.build -> grit_ray.models.tiny.pretrain -> grit_ray.models.tiny.build"], cycles


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert packages | modules <= set(LAYERS)


def test_imports_run_one_way():
    assert upward_imports(PACKAGE) == []


def test_an_upward_import_is_caught(tmp_path):
    # the check itself can fail: a data module that reaches up into the workers
    (tmp_path / "grit_ray" / "data").mkdir(parents=True)
    (tmp_path / "grit_ray" / "data" / "rows.py").write_text("def f():\n    from grit_ray.workers.rollout import X\n")
    bad = upward_imports(tmp_path / "grit_ray")
    assert len(bad) == 1 and "data may not import workers" in bad[0]


@pytest.mark.parametrize("family_token", ["<|image_pad|>", "<|vision_start|>", "<|im_start|>", "<IMG_CONTEXT>", "<img>"])
def test_only_models_name_a_family_token(family_token):
    outside = [p for p in PACKAGE.rglob("*.py") if "models" not in p.relative_to(PACKAGE).parts
               and family_token in p.read_text()]
    assert outside == []
