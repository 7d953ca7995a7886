"""No function rebinds a name that its module imports and then uses as that module.

`files = {}` inside `export.export_decoder` shadowed `from liveinterp.common import files`,
so the function's earlier `files.write_atomic(...)` raised UnboundLocalError in every
export (the assignment makes the name local to the whole function). Static check over the
package sources: a function that assigns (or takes as an argument) a module-level import's
name and also uses `<name>.<attr>` is reported with file and line.
"""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("liveinterp", "data_pipelines", "benchmarks")
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _module_imports(tree: ast.Module) -> dict[str, int]:
  out = {}
  for node in tree.body:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      for a in node.names:
        out[(a.asname or a.name).split(".")[0]] = node.lineno
  return out


def _own_scope(fn):
  """(names bound in `fn`'s own scope -> first line, names used as `<name>.<attr>`,
  names imported inside `fn`)."""
  binds, attr_bases, imports = {}, set(), set()
  for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs:
    binds.setdefault(a.arg, fn.lineno)

  def visit(node):
    for c in ast.iter_child_nodes(node):
      if isinstance(c, _SCOPES):  # a nested scope binds its own names
        if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
          binds.setdefault(c.name, c.lineno)
        continue
      if isinstance(c, ast.Name) and isinstance(c.ctx, ast.Store):
        binds.setdefault(c.id, c.lineno)
      elif isinstance(c, ast.Attribute) and isinstance(c.value, ast.Name):
        attr_bases.add(c.value.id)
      elif isinstance(c, (ast.Import, ast.ImportFrom)):
        imports.update((a.asname or a.name).split(".")[0] for a in c.names)
      visit(c)
  visit(fn)
  return binds, attr_bases, imports


def shadowing(source: str, path: str = "<source>") -> list[str]:
  tree = ast.parse(source)
  mods = _module_imports(tree)
  out = []
  for fn in ast.walk(tree):
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    binds, attr_bases, imports = _own_scope(fn)
    for name, line in binds.items():
      if name in mods and name in attr_bases and name not in imports:
        out.append(f"{path}:{line}: {fn.name}() rebinds {name!r} (imported at line "
                   f"{mods[name]}) and uses {name}.<attr>: UnboundLocalError or the wrong "
                   "object; rename the local or import the module under another name")
  return out


def test_the_check_finds_a_planted_shadow():
  planted = ("from liveinterp.common import files\n\n"
             "def export(out):\n"
             "  files.write_atomic(out, b'x')\n"
             "  files = {}\n"
             "  return files\n")
  (hit,) = shadowing(planted, "planted.py")
  assert hit.startswith("planted.py:5: export() rebinds 'files' (imported at line 1)")
  # a nested function's own local, or a function that imports the name itself, is fine
  ok = ("import json\n\ndef f():\n  def g():\n    json = 1\n    return json\n"
        "  return json.dumps(g())\n\ndef h():\n  import json\n  return json.dumps(1)\n")
  assert shadowing(ok) == []


def test_no_function_shadows_a_module_it_uses():
  hits = []
  for pkg in PACKAGES:
    for path in sorted(glob.glob(os.path.join(ROOT, pkg, "**", "*.py"), recursive=True)):
      with open(path, encoding="utf-8") as f:
        hits += shadowing(f.read(), os.path.relpath(path, ROOT))
  assert not hits, "\n".join(hits)
