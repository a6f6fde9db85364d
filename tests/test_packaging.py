"""The one wheel: core importable without the frameworks, adapters importable from the built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_core_imports_without_pipecat_or_livekit() -> None:
    code = (
        "import sys\n"
        "for name in ('pipecat', 'livekit', 'livekit.agents'): sys.modules[name] = None  # import fails\n"
        "import glmtts_plugins, glmtts_plugins.synthesizer, glmtts_plugins.audio, glmtts_plugins.text\n"
        "import glmtts_plugins.server, glmtts_plugins.cli\n"
        "print('ok')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("glmtts_plugins-*.whl")
    return path


def test_wheel_ships_the_adapters_under_their_ecosystem_names(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "glmtts_plugins/__init__.py" in names
    assert "pipecat_glmtts/__init__.py" in names and "pipecat_glmtts/tts.py" in names
    assert {"livekit/plugins/glmtts/__init__.py", "livekit/plugins/glmtts/py.typed"} <= names
    assert {"livekit/plugins/glmtts/log.py", "livekit/plugins/glmtts/version.py"} <= names
    # implicit namespace packages: an __init__ here would shadow livekit-agents' own modules
    assert "livekit/__init__.py" not in names and "livekit/plugins/__init__.py" not in names
    assert not any(n.startswith(("adapters/", "tests/", "examples/")) for n in names)


def test_adapter_imports_from_the_built_wheel(wheel: Path, tmp_path: Path) -> None:
    pytest.importorskip("pipecat", reason="the pipecat extra is not installed")
    pytest.importorskip("livekit.agents", reason="the livekit extra is not installed")
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import sys\n"
        f"root = {str(ROOT)!r}\n"
        "editable = (root, root + '/adapters/pipecat', root + '/adapters/livekit')\n"
        "sys.path[:] = [p for p in sys.path if p not in editable]  # drop the editable install\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import pipecat_glmtts, glmtts_plugins\n"
        "from pipecat_glmtts import GLMHttpTTSService\n"
        "from livekit.plugins import glmtts\n"
        "import livekit.agents\n"
        "assert glmtts.TTS and 'site-packages' in livekit.agents.__file__\n"
        "print(pipecat_glmtts.__file__)\n"
        "print(glmtts_plugins.__file__)\n"
        "print(glmtts.__file__)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert all(line.startswith(str(tmp_path)) for line in result.stdout.split())
