"""The layout's import rules, read from the source: one core, imported one way.

- nothing under ``workers/`` imports from ``service`` except ``service.core``;
- ``service/core/`` imports nothing of Litestar, of ``workers`` or of the rest of ``service``;
- the API packages import nothing of ``workers``, torch or whisper;
- one module constructs Celery apps (``service/core/delivery.py``);
- the tooling (``service/cli/``) stays apart: no runtime module imports it, and the ``steno``
  command starts without loading Litestar, the workers, Celery, torch or whisper;
- no runtime module grows past about 450 lines, and each says its one job on its first line.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_PACKAGES = (
    "service/jobs",
    "service/events",
    "service/health",
    "service/web",
    "service/openai",
    "service/webhooks",
    "service/ops",
)
API_MODULES = (
    "service/app.py",
    "service/http_errors.py",
    "service/openapi.py",
    "service/openapi_errors.py",
)
MAX_LINES = 450


def _sources(*roots: str) -> Iterator[Path]:
    for root in roots:
        path = ROOT / root
        yield from [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (inside functions too), absolute names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _violations(roots: tuple[str, ...], forbidden: object) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _sources(*roots)
        for module in sorted(imported_modules(path))
        if forbidden(module)  # type: ignore[operator]
    ]


def _top(module: str) -> str:
    return module.split(".")[0]


def test_workers_import_service_only_through_its_core() -> None:
    def forbidden(module: str) -> bool:
        return _top(module) == "service" and not (
            module == "service" or module.startswith("service.core")
        )

    assert _violations(("workers",), forbidden) == []


def test_the_core_imports_no_http_no_workers_and_no_other_service_package() -> None:
    def forbidden(module: str) -> bool:
        if _top(module) in {"litestar", "workers", "torch", "whisper"}:
            return True
        return _top(module) == "service" and not (
            module == "service" or module.startswith("service.core")
        )

    assert _violations(("service/core",), forbidden) == []


def test_the_api_imports_no_workers_torch_or_whisper() -> None:
    def forbidden(module: str) -> bool:
        return _top(module) in {"workers", "torch", "whisper"}

    assert _violations((*API_PACKAGES, *API_MODULES), forbidden) == []


def test_no_runtime_module_imports_the_tooling() -> None:
    runtime = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "service").iterdir())
        if path.name != "cli" and (path.suffix == ".py" or path.is_dir())
    ]

    def forbidden(module: str) -> bool:
        return module == "service.cli" or module.startswith("service.cli.")

    assert _violations((*runtime, "workers"), forbidden) == []


def test_the_steno_command_starts_without_the_runtime() -> None:
    # given a fresh interpreter (this one has imported the API already)
    probe = (
        "import sys\n"
        "from service.cli.commands import _parser\n"
        "_parser()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )

    # when it loads the steno command and builds its parser
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    # then nothing of Litestar, the workers, Celery, torch or whisper came with it
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "service" in loaded
    assert loaded.isdisjoint({"litestar", "granian", "workers", "celery", "torch", "whisper"})


def test_the_import_reader_sees_what_a_rule_forbids() -> None:
    # given a worker module that reaches into the API three ways (one inside a function)
    module = ROOT / "workers" / "_layout_probe.py"
    module.write_text(
        "from service.jobs import queries\n"
        "import service.events.hub\n"
        "def f():\n    from ..service import app\n    from service.core import states\n"
    )
    try:
        # when its imports are read
        found = imported_modules(module)
    finally:
        module.unlink()

    # then each one is there, with absolute names
    assert {"service.jobs.queries", "service.events.hub", "service.core.states"} <= found


def test_one_module_constructs_celery_apps() -> None:
    constructing = {
        str(path.relative_to(ROOT))
        for path in _sources("service", "workers")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Celery"
    }
    assert constructing == {"service/core/delivery.py"}


@pytest.mark.parametrize(
    "path",
    [p for p in _sources("service", "workers") if p.name != "__init__.py" or p.stat().st_size],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_each_runtime_module_is_small_and_says_its_job(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f"{len(text.splitlines())} lines"
    docstring = ast.get_docstring(ast.parse(text))
    assert docstring, "no module docstring"
    assert docstring.splitlines()[0].strip(), "the docstring's first line is empty"
