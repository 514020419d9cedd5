"""Imports run one way (docs/architecture.md): the method, the data, the models and the RL math
below; judges; workers; the trainer; evaluation, test hooks and the CLI on top. A module may
import its own package and the packages below it, never one above (a function-level import
counts too: it is the same dependency, only later)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "grit_ray"
# lowest first; a package may import itself and anything before it
LAYERS = ["config", "grit", "data", "models", "algo", "judge", "workers", "trainer", "evaluation", "testing", "cli"]


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
