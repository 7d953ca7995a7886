"""The import rules of tests/architecture_rules.txt hold for every Python file.

Each file is parsed with `ast` (nothing is imported): `import x`, `from x import y`
(also relative), at any nesting level (inside functions, `if`, `try`), and string
arguments of `importlib.import_module(...)` / `__import__(...)` calls. A failure names
the file, the line, the import and the rule it breaks.
"""

from __future__ import annotations

import ast
import dataclasses
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES_PATH = os.path.join(ROOT, "tests", "architecture_rules.txt")
_SKIP_DIRS = {"__pycache__", "runs", "workdir", "artifacts", "node_modules"}


@dataclasses.dataclass(frozen=True)
class Rule:
  package: str        # dotted name, or "*" for every file
  forbidden: str      # dotted module name (covers its submodules)

  def __str__(self):
    return f"{self.package} !-> {self.forbidden}"


@dataclasses.dataclass(frozen=True)
class Violation:
  path: str           # relative to the scanned root
  line: int
  imported: str
  rule: Rule

  def __str__(self):
    return f"{self.path}:{self.line}: imports {self.imported} (rule: {self.rule})"


def load_rules(path: str = RULES_PATH) -> list[Rule]:
  rules = []
  with open(path, encoding="utf-8") as f:
    for n, raw in enumerate(f, 1):
      line = raw.split("#", 1)[0].strip()
      if not line:
        continue
      package, arrow, *forbidden = line.split()
      if arrow != "!->" or not forbidden:
        raise ValueError(f"{path}:{n}: expected '<package> !-> <module> ...', got {raw!r}")
      rules += [Rule(package, m) for m in forbidden]
  return rules


def _within(module: str, package: str) -> bool:
  return package == "*" or module == package or module.startswith(package + ".")


def module_name(relpath: str) -> str:
  """'liveinterp/models/s2st.py' -> 'liveinterp.models.s2st'; a package's __init__.py
  is the package."""
  parts = relpath[:-len(".py")].split(os.sep)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _resolve(name: str | None, level: int, package: str) -> str | None:
  """Absolute name of a (possibly relative) import made in `package`."""
  if not level:
    return name
  base = package.split(".") if package else []
  if level - 1 >= len(base):  # above the top-level package
    return None
  base = base[:len(base) - (level - 1)]
  return ".".join(base + ([name] if name else []))


def _string(node) -> str | None:
  return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) \
      else None


def imports_of(source: str, module: str, is_package: bool = False):
  """(line, imported module name) for every import in `source`, at any nesting level.

  `from a import b` yields both `a` and `a.b` (b may be a submodule)."""
  package = module if is_package else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      base = _resolve(node.module, node.level, package)
      if base is None:
        continue
      yield node.lineno, base
      for alias in node.names:
        if alias.name != "*":
          yield node.lineno, f"{base}.{alias.name}" if base else alias.name
    elif isinstance(node, ast.Call):
      f = node.func
      fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
          else None
      if fname not in ("import_module", "__import__") or not node.args:
        continue
      name = _string(node.args[0])
      if name is None:
        continue  # a computed name cannot be checked statically
      if fname == "import_module" and name.startswith("."):
        anchor = _string(node.args[1]) if len(node.args) > 1 else next(
            (_string(k.value) for k in node.keywords if k.arg == "package"), None)
        if anchor is None:
          continue
        stripped = name.lstrip(".")
        name = _resolve(stripped or None, len(name) - len(stripped), anchor)
        if name is None:
          continue
      yield node.lineno, name


def python_files(root: str):
  """Relative paths of every .py file under `root` (skipping hidden directories, caches,
  run outputs and virtual environments)."""
  for d, dirs, files in os.walk(root):
    dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x not in _SKIP_DIRS
                     and not os.path.exists(os.path.join(d, x, "pyvenv.cfg")))
    for f in sorted(files):
      if f.endswith(".py"):
        yield os.path.relpath(os.path.join(d, f), root)


def import_violations(root: str, rules: list[Rule]) -> list[Violation]:
  out = []
  for rel in python_files(root):
    module = module_name(rel)
    applicable = [r for r in rules if _within(module, r.package)
                  and not _within(module, r.forbidden)]  # own package: not a layer crossing
    if not applicable:
      continue
    with open(os.path.join(root, rel), encoding="utf-8") as f:
      source = f.read()
    seen = set()
    for line, imported in imports_of(source, module, rel.endswith("__init__.py")):
      for r in applicable:
        if _within(imported, r.forbidden) and (line, r) not in seen:
          seen.add((line, r))
          out.append(Violation(rel, line, imported, r))
  return out


# ---- the tests ---------------------------------------------------------------------------

def test_rules_table_names_existing_packages():
  rules = load_rules()
  assert rules, RULES_PATH
  for name in {r.package for r in rules} | {r.forbidden for r in rules}:
    if name == "*":
      continue
    path = os.path.join(ROOT, *name.split("."))
    assert os.path.isdir(path) or os.path.isfile(path + ".py"), (
        f"{RULES_PATH} names {name!r}, which is neither a package nor a module: a typo "
        f"would silently switch its rule off")


def test_repository_follows_the_import_rules():
  violations = import_violations(ROOT, load_rules())
  assert not violations, "import rules broken (tests/architecture_rules.txt):\n" + "\n".join(
      str(v) for v in violations)


def test_planted_violations_are_reported_with_their_lines(tmp_path):
  pkg = tmp_path / "liveinterp" / "models"
  pkg.mkdir(parents=True)
  (tmp_path / "liveinterp" / "__init__.py").write_text("")
  (pkg / "__init__.py").write_text("")
  (pkg / "bad.py").write_text(
      "import os\n"                                              # 1 fine
      "from liveinterp.common import sharding\n"                 # 2 fine
      "import importlib\n"                                       # 3 fine
      "\n"
      "def f():\n"                                               # 5
      "  if True:\n"                                             # 6
      "    from liveinterp.train import step\n"                  # 7 nested, absolute
      "  from ..train.stages import stream_lm\n"                 # 8 relative
      "  m = importlib.import_module('liveinterp.train.loop')\n"  # 9 importlib
      "  return __import__('data_pipelines.tokenizer')\n"        # 10 __import__
      "from liveinterp import train\n"                           # 11 submodule as name
      "from . import s2st\n"                                     # 12 fine (own package)
      "x = importlib.import_module('.recipes', 'liveinterp.train')\n")  # 13 relative importlib
  (tmp_path / "data_pipelines").mkdir()
  (tmp_path / "data_pipelines" / "__init__.py").write_text("")
  (tmp_path / "data_pipelines" / "ok.py").write_text(
      "from liveinterp.common import axes\n"
      "def g():\n"
      "  import launch.helpers\n")                               # 3: nothing imports launch
  got = {(v.path, v.line, str(v.rule)) for v in import_violations(str(tmp_path), load_rules())}
  bad = os.path.join("liveinterp", "models", "bad.py")
  ok = os.path.join("data_pipelines", "ok.py")
  assert got == {
      (bad, 7, "liveinterp.models !-> liveinterp.train"),
      (bad, 8, "liveinterp.models !-> liveinterp.train"),
      (bad, 9, "liveinterp.models !-> liveinterp.train"),
      (bad, 10, "liveinterp.models !-> data_pipelines"),
      (bad, 11, "liveinterp.models !-> liveinterp.train"),
      (bad, 13, "liveinterp.models !-> liveinterp.train"),
      (ok, 3, "* !-> launch"),
  }
  msg = [str(v) for v in import_violations(str(tmp_path), load_rules()) if v.line == 8]
  assert msg == [f"{bad}:8: imports liveinterp.train.stages (rule: "
                 "liveinterp.models !-> liveinterp.train)"]


@pytest.mark.parametrize("source,expected", [
    ("from ...x import y", []),  # above the root: unresolvable, ignored
    ("importlib.import_module(name)", []),  # computed: not checkable
    ("from . import y", ["a.b", "a.b.y"]),
])
def test_relative_and_computed_imports(source, expected):
  assert [n for _, n in imports_of(source, "a.b.c")] == expected
