"""Security switches, contrast files and interrupted builds, second round (issue #18).

- ``trust_remote_code`` turns on only for a real boolean ``true``: YAML 1.1 words (``on``, ``yes``),
  quoted strings and numbers are refused before anything is loaded, and a real ``true`` says which
  files it is about to let transformers run. A planted module in a model folder proves nothing ran.
- Contrast files (read by ``extract``) get the same bounded reading as ``apply`` inputs.
- SIGTERM during an embedded model build leaves no ``.tmp-PID`` folder in the cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from steerkit.cli.main import cli
from steerkit.errors import DataError, RecipeError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A model folder whose config.json asks transformers to import planted.py, which leaves a marker."""
    folder, marker = tmp_path / "model", tmp_path / "PWNED"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "planted", "architectures": ["PlantedModel"],
        "auto_map": {"AutoConfig": "planted.PlantedConfig", "AutoModelForCausalLM": "planted.PlantedModel"}}))
    (folder / "planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return folder, marker


def test_yaml_words_are_not_booleans() -> None:
    from steerkit.yamlio import YamlProblems, parse_yaml

    data = parse_yaml("a: on\nb: yes\nc: OFF\nd: true\ne: False\nf: 'true'\n").data
    assert data == {"a": "on", "b": "yes", "c": "OFF", "d": True, "e": False, "f": "true"}
    with pytest.raises(YamlProblems, match="cannot read 'yes' as bool"):
        parse_yaml("a: !!bool yes\n")


@pytest.mark.parametrize("value", ['"on"', "on", "yes", "'true'", "1", "!!bool on", '"True"'])
def test_recipe_string_booleans_run_no_model_code(planted, tmp_path: Path, value: str) -> None:
    folder, marker = planted
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel:\n  id: {folder}\n  trust_remote_code: {value}\n  adapter: llama\n"
                      "gate: {rule: always_on}\nsteer: {layers: [0]}\nbundle: {path: b.safetensors}\n")
    r = CliRunner().invoke(cli, ["apply", str(recipe), "--prompt", "Who?"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "model.trust_remote_code" in r.output and "r.yaml:4:" in r.output
    assert not marker.exists()


@pytest.mark.parametrize("value", ["on", 1, "false", None])
def test_loader_refuses_non_boolean_switch(planted, value) -> None:
    from steerkit.models.loading import load_pretrained

    folder, marker = planted
    with pytest.raises(RecipeError, match="SK711"):  # "false" is a truthy string: transformers would run it
        load_pretrained(folder, trust_remote_code=value)
    assert not marker.exists()


def test_a_real_true_says_what_it_will_run_first(planted, monkeypatch, capsys) -> None:
    import transformers

    from steerkit.models.loading import load_pretrained

    folder, marker = planted

    def stop(*_a, **_k):
        raise KeyboardInterrupt  # stands in for transformers importing planted.py: stop right there

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", stop)
    with pytest.raises(KeyboardInterrupt):
        load_pretrained(folder, trust_remote_code=True)
    err = capsys.readouterr().err
    assert "trust_remote_code is true" in err and "planted.py" in err and "AutoConfig -> planted.PlantedConfig" in err
    assert not marker.exists()


def test_notice_for_a_hub_id_names_the_revision() -> None:
    from steerkit.models.loading import remote_code_notice

    assert "unpinned" in remote_code_notice("org/model", None)
    assert "revision abc123" in remote_code_notice("org/model", "abc123")


# ------------------------------------------------------------------ contrast files (extract's inputs)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_contrast_file_special_files(tmp_path: Path, deadline) -> None:
    from steerkit.data.contrast import read_contrast_jsonl

    os.mkfifo(tmp_path / "pipe.jsonl")
    with deadline():
        with pytest.raises(DataError, match="FIFO"):
            read_contrast_jsonl(tmp_path / "pipe.jsonl")
        if Path("/dev/zero").exists():
            with pytest.raises(DataError, match="character device"):
                read_contrast_jsonl("/dev/zero")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "c.jsonl").write_bytes(b'{"prompt": "Who?", "image": "pipe.png"}\n{"prompt": "caf\xe9"}\n'
                                       + rb'{"prompt": "Who is \ud800?"}' + b"\n")
    with deadline():
        with pytest.raises(DataError) as e:
            read_contrast_jsonl(tmp_path / "c.jsonl")
    text = str(e.value)
    assert "c.jsonl:1" in text and "FIFO" in text
    assert "c.jsonl:2" in text and "UnicodeDecodeError" in text  # was a UnicodeDecodeError traceback
    assert "c.jsonl:3" in text and "lone surrogate" in text


# ------------------------------------------------------------------ SIGTERM during a build
BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import steerkit.models.embedded as e

    def slow_build(name, world, out, *args):
        (out / "half-written.bin").write_bytes(b"x")
        print("building", flush=True)
        time.sleep(60)

    e._build = slow_build
    e.ensure_world = lambda *a, **k: Path(sys.argv[1])
    e.ensure_embedded("llava", progress=False, shipped=False)  # the shipped one needs no build
""")


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_sigterm_during_a_build_leaves_no_temp_folder(tmp_path: Path) -> None:
    env = {**os.environ, "STEERKIT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "building", proc.stderr.read()
        models = tmp_path / "home" / "models"
        assert [p.name for p in models.iterdir() if ".tmp-" in p.name]  # the build really is under way
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(models.iterdir()) == [], list(models.iterdir())
