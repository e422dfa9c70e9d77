"""The server core (manager_plugin outside http/) is importable without aiohttp, so
another manager can embed it and the HTTP layer stays the only place that knows HTTP."""

import pkgutil
import subprocess
import sys

import manager_plugin


def core_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(manager_plugin.__path__, "manager_plugin.")
        if not info.name.startswith("manager_plugin.http")
        and info.name != "manager_plugin.__main__"
    ]


def test_the_core_has_the_store_package_and_the_tuning_switches():
    modules = core_modules()
    assert "manager_plugin.store.facade" in modules
    assert "manager_plugin.tuning" in modules
    assert not any(name.startswith("manager_plugin.http") for name in modules)


def test_no_core_module_imports_aiohttp():
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'aiohttp' not in sys.modules, f'{name} pulls in aiohttp'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
