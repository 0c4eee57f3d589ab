"""Adding a family steerkit does not ship is one YAML file in a user folder, with no Python anywhere.

The family is ViP-LLaVA (VipLlavaForConditionalGeneration): its adapter, tests/assets/user_adapters/
vipllava.yaml, is copied into a temporary folder named by $STEERKIT_ADAPTERS. The tiny model is built
from that file alone (the generic zoo builder reads its tiny: section), saved as a Hub-like checkpoint,
and the CLI runs on it as a user would: adapters list, adapters check, extract, apply --compare. The
same folder then holds broken, duplicate and out-of-range files, which must warn or fail only for the
models they claim.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from steerkit.adapter import adapter_for_architecture, get_adapter, list_adapters
from steerkit.cli.main import cli
from steerkit.errors import AdapterError
from steerkit.resources import builtin_dir

ASSET = Path(__file__).resolve().parents[1] / "assets" / "user_adapters" / "vipllava.yaml"
ARCH = "VipLlavaForConditionalGeneration"


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    folder = tmp_path / "my-adapters"
    folder.mkdir()
    shutil.copy(ASSET, folder / "vipllava.yaml")
    monkeypatch.setenv("STEERKIT_ADAPTERS", str(folder))
    return folder


def test_the_family_is_not_shipped():
    assert ARCH not in {a for ad, _ in list_adapters(user=False).values() for a in ad.match.architectures}
    with pytest.raises(AdapterError, match="STEERKIT_ADAPTERS"):
        adapter_for_architecture(ARCH)


@pytest.fixture
def workdir(user_folder, tmp_path):
    """A saved tiny ViP-LLaVA built from the user folder's YAML, a small world and a recipe."""
    from steerkit.bench.world import generate_world
    from steerkit.models.zoo import build_tiny, save_tiny

    generate_world(tmp_path / "world", seed=0, n_profiles=20)
    save_tiny(build_tiny("vipllava", std=0.1), tmp_path / "model")
    (tmp_path / "recipe.yaml").write_text("""schema_version: 1
name: vipllava-user-adapter
model: {id: model}
direction:
  method: mean_diff
  recall:
    source: {kind: jsonl, path: world/contrast/recall.jsonl, limit: 6}
    image_perturbation: {kind: pgd_linf, epsilon: 0.0627, step: 0.0078, steps: 2}
  erasure: {source: {kind: jsonl, path: world/contrast/erasure.jsonl, limit: 6}}
steer: {layers: {start: 0}, strength: {lambda: -4.0}}
bundle: {path: out/bundle.safetensors}
""")
    image = sorted((tmp_path / "world/contrast/images").iterdir())[0]
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Who is this?", "image": str(image)}) + "\n")
    return tmp_path


def test_one_yaml_in_a_user_folder_adds_a_family(workdir, user_folder):
    runner = CliRunner()
    listed = runner.invoke(cli, ["adapters", "list"])
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if line.strip()]
    assert len(lines) >= 16 and any(line.startswith("vipllava") and str(user_folder) in line for line in lines)

    checked = runner.invoke(cli, ["adapters", "check", str(workdir / "model")])
    assert checked.exit_code == 0, checked.output
    assert "ok  image tokens     32 of id" in checked.output and "32 image features" in checked.output
    assert "adapter 'vipllava' fits VipLlavaForConditionalGeneration" in checked.output

    extracted = runner.invoke(cli, ["extract", str(workdir / "recipe.yaml")])
    assert extracted.exit_code == 0, extracted.output
    assert (workdir / "out/bundle.safetensors").is_file()

    out = workdir / "answers.jsonl"
    applied = runner.invoke(cli, ["apply", str(workdir / "recipe.yaml"), "--input", str(workdir / "prompts.jsonl"),
                                  "--out", str(out), "--compare", "--max-new-tokens", "4"])
    assert applied.exit_code == 0, applied.output
    row = json.loads(out.read_text().splitlines()[0])
    assert row["steered"] != row["unsteered"]  # the steering reached the user-adapter model


def test_recipe_may_name_an_adapter_file_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("STEERKIT_ADAPTERS", raising=False)
    (tmp_path / "adapters").mkdir()
    shutil.copy(ASSET, tmp_path / "adapters" / "vip.yaml")
    adapter = get_adapter("adapters/vip.yaml", base_dir=tmp_path)
    assert adapter.name == "vipllava" and ARCH in adapter.match.architectures
    with pytest.raises(AdapterError) as err:
        get_adapter("adapters/missing.yaml", base_dir=tmp_path)
    assert "SK001" in err.value.render()


def test_a_bad_file_fails_only_for_its_own_models(user_folder, caplog):
    (user_folder / "broken.yaml").write_text("schema_version: 1\nname: broken\nmatch: {architectures: [FooForBar]}\n"
                                             "sites: {}\n")
    assert adapter_for_architecture("LlavaForConditionalGeneration").name == "llava"  # others unaffected
    assert get_adapter("vipllava").name == "vipllava"
    with pytest.raises(AdapterError) as err:
        adapter_for_architecture("FooForBar")
    assert "broken.yaml" in err.value.render()
    with pytest.raises(AdapterError):
        get_adapter("broken")
    listed = CliRunner().invoke(cli, ["adapters", "list"])
    assert listed.exit_code == 0 and "(invalid)" in listed.output and "broken.yaml" in listed.output


def test_duplicates_and_version_ranges_warn_with_names(user_folder, caplog):
    text = ASSET.read_text()
    (user_folder / "llava_mine.yaml").write_text(
        (builtin_dir("adapters") / "llava.yaml").read_text().replace("name: llava", "name: llava_mine"))
    (user_folder / "old.yaml").write_text(text.replace("name: vipllava", "name: vip_old")
                                          .replace('transformers: ">=5.0"', 'transformers: "<4.40"')
                                          .replace(ARCH, "OldVipForConditionalGeneration"))
    with caplog.at_level(logging.WARNING, logger="steerkit.adapters"):
        chosen = adapter_for_architecture("LlavaForConditionalGeneration")
        get_adapter("vip_old")
    assert chosen.name == "llava_mine"  # user folders come first, and say so
    text = caplog.text
    assert "two adapters claim LlavaForConditionalGeneration" in text and "llava_mine.yaml" in text
    import transformers

    assert "written for transformers <4.40" in text and transformers.__version__ in text


def test_bad_specifier_is_a_schema_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(ASSET.read_text().replace('transformers: ">=5.0"', 'transformers: "five"'))
    with pytest.raises(AdapterError, match="PEP 440"):
        get_adapter(str(bad))
