"""Static safety scan of the package (issue #6): no code path may execute data.

Recipes, adapters, bundles and prompts come from other people. The package must never hand them to
something that can run code: pickle-family loaders, ``torch.load``, unsafe YAML loaders, ``eval`` /
``exec`` / ``compile``, dynamic imports, remote model code switched on in code, or a shell. The scan
parses every ``steerkit/**/*.py`` with ``ast`` (not grep: docstrings and comments may mention these
names, and ``compile_recipe`` / ``steerkit/compile.py`` are ours, not the builtin), and the self-tests
below prove each rule fires, so a clean result is not a vacuous one.

Allowed on purpose: ``importlib.import_module`` whose argument is built only from string literals that
are fixed when the code is written. Two patterns do that:

* the CLI registers its command modules in a loop over a literal tuple of names
  (``for name in ("validate_cmd", ...): import_module(f"steerkit.cli.{name}")``);
* PEP 562 lazy attributes (``steerkit``, ``steerkit.models``, ``steerkit.unlearn``) look the module up
  in a module-level dict literal (``_LAZY[name]``) after ``if name in _LAZY``.

Neither lets a recipe, a config value or a command-line argument choose what gets imported. Anything
else that feeds ``import_module`` (a variable, a function argument, a config value) is flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "steerkit"

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "cloudpickle", "joblib",
                  "subprocess"}
BANNED_ATTRS = {  # module -> attributes that load code or run a shell
    "torch": {"load"},
    "yaml": {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all", "Loader",
             "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader"},
    "os": {"system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
           "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn",
           "posix_spawnp"},
    "pandas": {"read_pickle"},
    "builtins": {"eval", "exec", "compile", "__import__"},
}
BANNED_BUILTINS = {"eval", "exec", "compile"}
DANGEROUS_TRUE_KEYWORDS = {"trust_remote_code", "allow_pickle"}  # keyword=True literals
DANGEROUS_FALSE_KEYWORDS = {"weights_only"}  # torch.load(weights_only=False) and friends


def _str_constants(node: ast.AST) -> bool:
    """A literal tuple/list of strings (or of tuples of strings)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_str_constants(e) for e in node.elts)
    return False


def _literal_registries(tree: ast.Module) -> set[str]:
    """Module-level ``NAME = {...}`` dicts whose values are all string literals (or tuples of them)."""
    found = set()
    for stmt in tree.body:
        target = value = None
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            target, value = stmt.target, stmt.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Dict) and value.values and \
                all(_str_constants(v) for v in value.values):
            found.add(target.id)
    return found


def _literal_names(func: ast.AST, registries: set[str]) -> set[str]:
    """Names inside ``func`` that can only hold literals: loop variables over literal tuples, and names
    assigned (or tuple-unpacked) from ``REGISTRY[...]`` of a literal registry."""
    names = {"__name__"}
    for node in ast.walk(func):
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name) \
                and _str_constants(node.iter):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Subscript) \
                and isinstance(node.value.value, ast.Name) and node.value.value.id in registries:
            target = node.targets[0]
            for t in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return names


def _literal_only(arg: ast.AST, names: set[str], registries: set[str]) -> bool:
    if isinstance(arg, ast.Constant):
        return isinstance(arg.value, str)
    if isinstance(arg, ast.Name):
        return arg.id in names
    if isinstance(arg, ast.Subscript):
        return isinstance(arg.value, ast.Name) and arg.value.id in registries
    if isinstance(arg, ast.JoinedStr):
        return all(_literal_only(v.value if isinstance(v, ast.FormattedValue) else v, names, registries)
                   for v in arg.values)
    return False


def scan_source(text: str, filename: str = "<src>") -> list[str]:
    """Every violation in one module, as 'file:line: what'."""
    tree = ast.parse(text, filename)
    registries = _literal_registries(tree)
    out: list[str] = []
    aliases: dict[str, str] = {}  # local name -> module it refers to (import torch as th)
    imported: dict[str, str] = {}  # local name -> "module.name" (from importlib import import_module as im)
    # module-level names that shadow builtins (def compile, from x import compile); a method named
    # eval does not: inside the module, a bare eval() still means the builtin
    bound: set[str] = {s.name for s in tree.body
                       if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}

    def flag(node: ast.AST, what: str) -> None:
        out.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                root = a.name.split(".")[0]
                aliases[a.asname or root] = a.name if a.asname else root
                if root in BANNED_MODULES:
                    flag(node, f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root = node.module.split(".")[0]
            if root in BANNED_MODULES:
                flag(node, f"from {node.module} import ...")
            for a in node.names:
                if a.name in BANNED_ATTRS.get(node.module, ()):
                    flag(node, f"from {node.module} import {a.name}")
                bound.add(a.asname or a.name)
                imported[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.ImportFrom):
            bound.update(a.asname or a.name for a in node.names)

    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    enclosing: dict[int, ast.AST] = {}
    for f in funcs:  # innermost function of every node (walk order: outer functions first)
        for n in ast.walk(f):
            enclosing[id(n)] = f

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id, node.value.id)
            if node.attr in BANNED_ATTRS.get(module, ()):
                flag(node, f"{module}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id == "__import__":
            flag(node, "__import__")
        elif isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in BANNED_BUILTINS and fn.id not in bound:
                flag(node, f"builtin {fn.id}()")
            is_import_module = (isinstance(fn, ast.Attribute) and fn.attr == "import_module"
                                and isinstance(fn.value, ast.Name)
                                and aliases.get(fn.value.id, fn.value.id) == "importlib") or \
                               (isinstance(fn, ast.Name) and imported.get(fn.id) == "importlib.import_module")
            if is_import_module:
                scope = enclosing.get(id(node), tree)
                names = _literal_names(scope, registries)
                arg = node.args[0] if node.args else None
                if arg is None or not _literal_only(arg, names, registries):
                    flag(node, "importlib.import_module with a non-literal module name")
            for kw in node.keywords:
                if isinstance(kw.value, ast.Constant):
                    if kw.arg in DANGEROUS_TRUE_KEYWORDS and kw.value.value is True:
                        flag(node, f"{kw.arg}=True")
                    if kw.arg in DANGEROUS_FALSE_KEYWORDS and kw.value.value is False:
                        flag(node, f"{kw.arg}=False")
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value in DANGEROUS_TRUE_KEYWORDS and \
                        isinstance(v, ast.Constant) and v.value is True:
                    flag(node, f"'{k.value}': True")
    return out


def package_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30, f"expected the whole package under {PACKAGE}"
    return files


def test_package_runs_no_data_as_code() -> None:
    violations = []
    for path in package_files():
        violations += scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert not violations, "unsafe constructs in steerkit/:\n" + "\n".join(violations)


# ------------------------------------------------------------------------------------- the rules fire
BAD_SNIPPETS = [
    ("import pickle", "import pickle"),
    ("import cPickle", "import cPickle"),
    ("from dill import loads", "from dill import"),
    ("import marshal as m", "import marshal"),
    ("import shelve", "import shelve"),
    ("import subprocess\nsubprocess.run(['ls'])", "import subprocess"),
    ("from subprocess import run", "from subprocess import"),
    ("import os\nos.system('ls')", "os.system"),
    ("from os import system", "from os import system"),
    ("import torch\ntorch.load('x.pt')", "torch.load"),
    ("import torch as th\nth.load('x.pt')", "torch.load"),
    ("from torch import load", "from torch import load"),
    ("import yaml\nyaml.load(s)", "yaml.load"),
    ("import yaml\nyaml.unsafe_load(s)", "yaml.unsafe_load"),
    ("import yaml\nyaml.safe_load(s, Loader=yaml.FullLoader)", "yaml.FullLoader"),
    ("import yaml\nyaml.load(s, Loader=yaml.Loader)", "yaml.Loader"),
    ("from yaml import Loader", "from yaml import Loader"),
    ("eval('1+1')", "builtin eval()"),
    ("exec('x = 1')", "builtin exec()"),
    ("code = compile('1', 'f', 'eval')", "builtin compile()"),
    ("import builtins\nbuiltins.eval('1')", "builtins.eval"),
    ("m = __import__('os')", "__import__"),
    ("import importlib\ndef f(name):\n    return importlib.import_module(name)", "non-literal"),
    ("import importlib\ndef f(cfg):\n    return importlib.import_module(f'steerkit.{cfg.plugin}')", "non-literal"),
    ("from importlib import import_module\nimport_module(user_value)", "non-literal"),
    ("from importlib import import_module as im\nim(user_value)", "non-literal"),
    ("class A:\n    def eval(self):\n        return eval(self.text)", "builtin eval()"),
    ("AutoModel.from_pretrained(x, trust_remote_code=True)", "trust_remote_code=True"),
    ("kwargs = {'trust_remote_code': True}", "'trust_remote_code': True"),
    ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "allow_pickle=True"),
    ("load(f, weights_only=False)", "weights_only=False"),
]

GOOD_SNIPPETS = [
    "from .compile import compile_recipe\nplan = compile_recipe(r, a)",  # ours, not the builtin
    "import re\nPATTERN = re.compile('x')",  # a method, not the builtin
    "def compile(x):\n    return x\ncompile(1)",  # a module-level def shadows the builtin
    "model.eval()",  # nn.Module.eval, not the builtin
    "import yaml\nyaml.safe_load(s)\nyaml.SafeLoader(s)\nyaml.safe_dump(d)",
    "import safetensors.torch\nsafetensors.torch.load(blob)",
    "AutoModel.from_pretrained(x, trust_remote_code=spec.trust_remote_code)",
    "# torch.load and pickle in a comment\n'''eval( in a docstring'''",
    # the CLI's registration loop over a literal tuple
    "def _register():\n    import importlib\n    for name in ('validate_cmd', 'apply_cmd'):\n"
    "        module = importlib.import_module(f'steerkit.cli.{name}')",
    # PEP 562 lazy attributes from a literal registry
    "_LAZY = {'Bundle': ('steerkit.bundle', 'Bundle')}\ndef __getattr__(name):\n    import importlib\n"
    "    module, attr = _LAZY[name]\n    return getattr(importlib.import_module(module), attr)",
    "_LAZY = {'zoo': 'zoo'}\ndef __getattr__(name):\n    import importlib\n"
    "    return importlib.import_module(f'{__name__}.{_LAZY[name]}')",
]


@pytest.mark.parametrize("snippet, needle", BAD_SNIPPETS, ids=[n for _, n in BAD_SNIPPETS])
def test_rule_fires(snippet: str, needle: str) -> None:
    found = scan_source(snippet)
    assert any(needle in v for v in found), f"{snippet!r} not flagged ({found})"


@pytest.mark.parametrize("snippet", GOOD_SNIPPETS)
def test_allowed_pattern_passes(snippet: str) -> None:
    assert scan_source(snippet) == []


def test_registry_must_be_literal() -> None:
    """A registry filled at run time (e.g. from a config) does not earn the lazy-import exemption."""
    src = ("_LAZY = load_registry()\ndef __getattr__(name):\n    import importlib\n"
           "    return importlib.import_module(_LAZY[name])")
    assert any("non-literal" in v for v in scan_source(src))
    src = ("NAMES = load()\ndef f():\n    import importlib\n    for n in NAMES:\n"
           "        importlib.import_module(f'steerkit.{n}')")
    assert any("non-literal" in v for v in scan_source(src))
