"""The ``glmtts`` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glmtts_plugins.audio import read_wav
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, local_server


def glmtts(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    base = {
        k: v for k, v in os.environ.items() if k not in ("ZAI_API_KEY", "ZHIPUAI_API_KEY", "GLMTTS_BASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "glmtts_plugins.cli", *args],
        env={**base, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_voices_lists_the_seven_ids() -> None:
    result = glmtts("voices")
    assert result.returncode == 0
    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert ids == ["tongtong", "xiaochen", "chuichui", "jam", "kazi", "douji", "luodo"]


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_say_offline_writes_the_rate_and_reports_latency(tmp_path: Path, rate: int) -> None:
    out = tmp_path / "a.wav"
    result = glmtts("say", "您好，请问有什么可以帮您？", "-o", str(out), "--rate", str(rate))
    assert result.returncode == 0, result.stderr
    assert "offline" in result.stderr and "not GLM-TTS" in result.stderr  # says which engine, honestly
    assert "time to first audio" in result.stdout and "real-time factor" in result.stdout
    pcm, got_rate, channels = read_wav(out)
    assert (got_rate, channels) == (rate, 1)
    assert len(pcm) / 2 / rate > 1.0


def test_say_reads_stdin(tmp_path: Path) -> None:
    out = tmp_path / "b.wav"
    result = glmtts("say", "-", "-o", str(out), "--engine", "offline", stdin="Hello from standard input.")
    assert result.returncode == 0, result.stderr
    assert len(read_wav(out)[0]) > 24000


def test_cloud_without_a_key_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = glmtts("say", "hi", "-o", str(tmp_path / "c.wav"), "--engine", "cloud")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "ZAI_API_KEY" in result.stderr.strip().splitlines()[-1]


def test_say_uses_the_cloud_protocol_when_a_key_is_set(tmp_path: Path) -> None:
    tone = ToneEngine()
    with local_server(tone) as server:
        out = tmp_path / "d.wav"
        env = {"ZAI_API_KEY": API_KEY}
        result = glmtts("say", "你好", "-o", str(out), "--base-url", server.base_url, env=env)
        bad = glmtts("say", "你好", "--voice", "nobody", "--base-url", server.base_url, env=env)
    assert result.returncode == 0, result.stderr
    assert "engine: cloud" in result.stderr
    assert read_wav(out)[0] == tone.pcm("你好")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "1214" in bad.stderr


def test_demo_writes_8k_and_16k_and_prints_a_table(tmp_path: Path) -> None:
    result = glmtts("demo", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "first audio" in result.stdout and "RTF" in result.stdout
    assert "not GLM-TTS" in result.stdout
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 8
    for name in files:
        rate = read_wav(tmp_path / name)[1]
        assert rate == (8000 if name.endswith("_8k.wav") else 16000)


def test_say_with_the_vllm_omni_engine_and_named_voices(tmp_path: Path) -> None:
    import numpy as np

    from glmtts_plugins.audio import pcm_to_wav

    voices = tmp_path / "voices"
    voices.mkdir()
    t = np.arange(4 * 16000) / 16000
    (voices / "support.wav").write_bytes(
        pcm_to_wav((5000 * np.sin(2 * np.pi * 200 * t)).astype("<i2").tobytes(), 16000)
    )
    (voices / "support.txt").write_text("你好", encoding="utf-8")
    tone = ToneEngine()
    with local_server(tone, tokens=["vllm-key"]) as server:
        out = tmp_path / "v.wav"
        env = {"VLLM_API_KEY": "vllm-key"}
        args = ("--engine", "vllm-omni", "--base-url", server.root_url, "--voices", str(voices))
        result = glmtts("say", "你好", "-o", str(out), *args, "--voice", "support", env=env)
        bad = glmtts("say", "你好", "-o", str(out), *args, "--voice", "tongtong", env=env)
        paths = [r.path for r in server.records]
    assert result.returncode == 0, result.stderr
    assert read_wav(out)[0] == tone.pcm("你好") and paths == ["/v1/audio/speech"]
    assert (
        bad.returncode != 0 and "Traceback" not in bad.stderr and "registered voices: support" in bad.stderr
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--engine", "offline", "-o", "{tmp}/a-file/x.wav"], "a-file"),  # under a file, not a folder
        (["--engine", "offline", "-o", "/proc/version"], "/proc/version"),  # not writable, even by root
        (["--engine", "cloud", "--base-url", "localhost:8000"], "base_url"),
        (["--engine", "cloud", "--base-url", "http://[::1"], "base_url"),
        (["--engine", "vllm-omni", "--base-url", "http://h:99999", "--voices", "x.toml"], "base_url"),
    ],
    ids=["missing-dir", "unwritable", "no-scheme", "unparsable", "bad-port"],
)
def test_bad_output_or_base_url_is_one_line_not_a_traceback(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    (tmp_path / "a-file").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = glmtts("say", "你好。", *args, env={"ZAI_API_KEY": "k"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("glmtts: ") and fragment in last, result.stderr
