"""Staged workers: what Dataflow installs from `--setup_file` is enough to run the Beam jobs.

The source distribution is built by Beam's own stager (what `--setup_file` runs on
submission: `python -m build --sdist --no-isolation` when `build` is installed, else
`python setup.py sdist`), from a copy of the project. Then ExampleGen and the statistics job run
in a fresh interpreter whose only copy of `components` and `pipeline` is the unpacked sdist (the
editable install's finder removed), so any module the DoFns import and the sdist lacks fails.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile

from apache_beam.runners.portability.stager import Stager
from helpers import PROJECT_ROOT
from packaging.requirements import Requirement

FIRST_PARTY = ("components", "pipeline")

# Runs in the subprocess: argv = sdist root, images folder, work folder.
_WORKER = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_importer_cache.clear()
sys.path.insert(0, sys.argv[1])
from components.example_gen import IngestConfig, run_ingest
from components.statistics_gen import generate_statistics, statistics_schema
metadata = run_ingest(sys.argv[2], sys.argv[3] + "/examples", IngestConfig())
generate_statistics(sys.argv[3] + "/examples", sys.argv[3] + "/statistics", statistics_schema())
modules = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
           if name.split(".")[0] in ("components", "pipeline")}
print(json.dumps({"written": metadata["num_written"], "modules": modules}))
"""


def _install_requires() -> list[str]:
    """setup.py's install_requires, read without running setup()."""
    tree = ast.parse((PROJECT_ROOT / "setup.py").read_text())
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    keyword = next(k for k in call.keywords if k.arg == "install_requires")
    return ast.literal_eval(keyword.value)


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[Requirement(name).name.lower().replace("_", "-")] = version.strip()
    return pins


def _build_sdist(tmp_path) -> tarfile.TarFile:
    source = tmp_path / "checkout"
    shutil.copytree(
        PROJECT_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "runs",
            "export",
            "data",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".ruff_cache",
        ),
    )
    (tmp_path / "staged").mkdir()
    return tarfile.open(
        Stager._build_setup_package(str(source / "setup.py"), str(tmp_path / "staged"))
    )


def test_sdist_holds_the_pinned_requirements_and_every_module(synthetic_images, tmp_path):
    with _build_sdist(tmp_path) as sdist:
        names = sdist.getnames()
        (root,) = {name.split("/")[0] for name in names}
        (requires,) = [n for n in names if n.endswith(".egg-info/requires.txt")]
        staged = sdist.extractfile(requires).read().decode().split("\n\n")[0].split()
        sdist.extractall(tmp_path / "unpacked", filter="data")

    # Workers install exactly setup.py's requirements, pinned as constraints.txt pins them,
    # and the versions tested here satisfy them.
    assert [str(Requirement(r)) for r in staged] == [
        str(Requirement(r)) for r in _install_requires()
    ]
    pins = _constraints()
    for line in staged:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (line, installed)
        for spec in requirement.specifier:
            if spec.operator == "==":
                assert pins.get(name) == spec.version, (line, pins.get(name))
    assert len([r for r in staged if "==" in r]) >= 8

    # The Beam jobs run on the sdist's modules alone.
    sdist_root = tmp_path / "unpacked" / root
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", _WORKER, str(sdist_root), str(synthetic_images), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["written"] > 0
    modules = result["modules"]
    assert {"components.example_gen", "components.examples", "components.statistics_gen"} <= set(
        modules
    )
    outside = {
        name: path
        for name, path in modules.items()
        if path is not None and not path.startswith(str(sdist_root))
    }
    assert not outside, f"imported from outside the sdist: {outside}"
    staged_modules = {n[len(root) + 1 :] for n in names if n.endswith(".py")}
    for name, path in modules.items():
        if path is not None:
            assert os.path.relpath(path, sdist_root) in staged_modules, name
