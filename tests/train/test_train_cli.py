"""steerkit train: bad input exits 2 with a rendered message, no traceback."""

from __future__ import annotations

from click.testing import CliRunner

from steerkit.cli.train_cmd import command


def _run(args):
    return CliRunner().invoke(command, args)


def test_missing_data_dir_exits_2(tmp_path):
    res = _run(["--data", str(tmp_path / "nope"), "--arch", "llava", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "data folder not found" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_folder_without_training_configs_exits_2(tmp_path):
    (tmp_path / "data").mkdir()
    res = _run(["--data", str(tmp_path / "data"), "--arch", "llava", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "ft_Data" in res.output


def test_arch_and_model_conflict_exits_2(tmp_path):
    res = _run(["--data", str(tmp_path), "--arch", "llava", "--model", "x", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "exactly one of --arch or --model" in res.output


def test_embedded_with_data_exits_2(tmp_path):
    res = _run(["--embedded", "llava", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_non_empty_out_exits_2(tmp_path, tiny_world):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = _run(["--data", str(tiny_world), "--arch", "llava", "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "keep.txt").exists()


def test_train_on_user_data_writes_a_loadable_checkpoint(tmp_path, tiny_world):
    from steerkit.models.loading import load_pretrained

    out = tmp_path / "ckpt"
    res = _run(["--data", str(tiny_world), "--arch", "qwen2_5_vl", "--size", "tiny", "--out", str(out),
                "--max-steps", "2", "--batch-size", "8", "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert res.stdout.strip().splitlines()[-1].endswith(str(out))  # stdout ends with the path; bars go to stderr
    assert (out / "steerkit_train.json").is_file()
    model, processor, tok = load_pretrained(out, loader=None)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration" and processor is not None


def test_fine_tune_a_checkpoint_with_model(tmp_path, tiny_world):
    from steerkit.models.zoo import build_tiny, save_tiny

    src = save_tiny(build_tiny("llava"), tmp_path / "base")
    out = tmp_path / "ft"
    res = _run(["--data", str(tiny_world), "--model", str(src), "--out", str(out), "--max-steps", "1",
                "--batch-size", "4", "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert (out / "config.json").is_file() and (out / "steerkit_train.json").is_file()
