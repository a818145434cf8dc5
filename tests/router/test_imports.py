"""The router is a user of ACS: it imports nothing of callgrid but itself (so it runs unchanged on Azure)."""

from __future__ import annotations

import ast
from pathlib import Path

import callgrid.router

ROUTER = Path(callgrid.router.__file__).parent
CLI = ROUTER.parent / "cli" / "router.py"
FORBIDDEN = ("callgrid.platform", "callgrid.eventgrid", "callgrid.store", "callgrid.api", "callgrid.node")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module or "")
    return names


# Besides itself, the router may use the SQL dialect translation its PostgreSQL schema is derived with (one
# source for both databases): a leaf module that imports nothing of callgrid, checked below.
SHARED_LEAVES = ("callgrid.sql_dialect",)


def test_router_imports_only_itself_from_callgrid() -> None:
    files = sorted(ROUTER.rglob("*.py"))
    assert len(files) > 5
    for path in files:
        foreign = {
            n
            for n in _imports(path)
            if n.split(".")[0] == "callgrid" and not n.startswith("callgrid.router") and n not in SHARED_LEAVES
        }
        assert not foreign, f"{path.name} imports {foreign}"


def test_what_the_router_shares_imports_nothing_of_callgrid() -> None:
    for leaf in SHARED_LEAVES:
        path = ROUTER.parent / (leaf.removeprefix("callgrid.").replace(".", "/") + ".py")
        assert not {n for n in _imports(path) if n.split(".")[0] == "callgrid"}, leaf


def test_router_cli_keeps_off_the_platform() -> None:
    imported = _imports(CLI)
    assert not {n for n in imported if n.startswith(FORBIDDEN) or n in ("callgrid.cli.common", "callgrid.client")}
