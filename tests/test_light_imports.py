"""Parsing the workflow imports no heavy library (issue 24): the Snakefile and the rules import
the config checks, the registries and the request files, which declare without importing torch,
scipy, scikit-learn or xgboost; every implementation they name by import path exists."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnflow.dmm.estimators import ESTIMATORS
from unlearnflow.lazy import Lazy, imported
from unlearnflow.registry import ARTIFACTS, METHODS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "sklearn", "xgboost", "cvxpy")


def workflow_imports() -> list[str]:
    """``import MODULE`` for every unlearnflow module the Snakefile or a rule file imports from."""
    modules = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        modules.update(re.findall(r"^(?:from|import) (unlearnflow[.\w]*)", path.read_text(), flags=re.MULTILINE))
    return [f"import {module}" for module in sorted(modules)]


def heavy_modules_after(code: str) -> list[str]:
    """The heavy libraries in sys.modules after a fresh interpreter runs `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(name for name in {HEAVY!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_the_workflow_imports_are_found():
    assert {"import unlearnflow.config", "import unlearnflow.registry", "import unlearnflow.core.store",
            "import unlearnflow.ops.requests", "import unlearnflow.dmm.ridge_theory"} <= set(workflow_imports())


def test_parsing_the_workflow_imports_no_torch_scipy_sklearn_or_xgboost():
    imports = workflow_imports()
    assert heavy_modules_after("\n".join(imports)) == []
    # and the config checks run without them: validating the default config imports none
    check = ("from unlearnflow.config import experiments, load_config_file, load_schema, validate_config\n"
             f"schema = load_schema({str(ROOT / 'workflow/schemas/config.schema.yaml')!r})\n"
             f"for config in experiments(load_config_file({str(ROOT / 'config.yaml')!r})).values():\n"
             "    validate_config(config, schema)")
    assert heavy_modules_after(check) == []


def test_the_command_line_parses_without_torch():
    assert heavy_modules_after("from unlearnflow.cli import build_parser\nbuild_parser()") == []


def test_a_heavy_import_would_be_caught():
    assert heavy_modules_after("import unlearnflow.core.models") == ["torch"]


def named_implementations() -> list[Lazy]:
    """Every implementation the registries name by import path."""
    fields = [getattr(spec, name) for spec in METHODS.values()
              for name in ("unlearn", "predict", "prepare", "check_inputs")]
    fields += [getattr(artifact, name) for artifact in ARTIFACTS.values() for name in ("load", "build_for_shadows")]
    return [value for value in fields if isinstance(value, Lazy)]


@pytest.mark.parametrize("lazy", named_implementations(), ids=lambda lazy: lazy.path)
def test_every_implementation_named_by_path_exists(lazy):
    assert callable(imported(lazy.path))


def test_every_estimator_fit_exists():
    for estimator in ESTIMATORS.values():
        assert callable(estimator.load_fit())


def test_a_wrong_path_fails_when_called():
    with pytest.raises(AttributeError):
        Lazy("unlearnflow.errors:no_such_function")()
    with pytest.raises(ValueError, match="package.module:attribute"):
        imported("unlearnflow.errors")
