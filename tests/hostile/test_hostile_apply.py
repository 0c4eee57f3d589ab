"""``steerkit apply`` on broken input lines and an interrupted run (issue #6).

Every bad jsonl line is reported with its line number, the good lines are still answered and written,
and an interrupted ``--out`` run leaves no partial file behind. Runs on a tiny saved LLaVA with a
hand-built bundle and ``gate: {rule: always_on}``, so no extraction is needed.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import zlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from steerkit.bundle import Bundle
from steerkit.cli.main import cli
from steerkit.testing.fixtures import tiny

MAX_NEW = 2
LONG_PROMPT = "the cat sees a blue house and " * 700  # well past the tiny model's 2048-token context


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A 200-byte PNG that claims 40000 x 40000 pixels (1.6 G): PIL refuses it as a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


# (line content, expected substrings in the report for that line); None: a good line that must be answered
LINES: list[tuple[str | bytes, list[str] | None]] = [
    ('\ufeff{"prompt": "Who is this?", "image": "good.png"}', None),  # a BOM (Windows editors) is fine
    ("{not json", ["not a JSON object"]),
    ("[1, 2, 3]", ["expected a JSON object, got list"]),
    ('{"image": "good.png"}', ["'prompt' is missing or empty"]),
    ('{"prompt": "   "}', ["'prompt' is missing or empty"]),
    ('{"prompt": "Who?", "promt": "typo"}', ["unknown keys ['promt']"]),
    ('{"prompt": "Who?", "image": "missing.png"}', ["image not found", "missing.png"]),
    ('{"prompt": "Who?", "image": "corrupt.png"}', ["image cannot be read", "corrupt.png"]),
    ('{"prompt": "Where was the person born?"}', None),
    (json.dumps({"prompt": LONG_PROMPT}), ["exceeds the model's context of 2048"]),
    ('{"prompt": "Who?", "image": 5}', ["'image' must be a path string or null"]),
    ("[" * 100_000 + "]" * 100_000, ["not a JSON object"]),  # json.loads recursion
    ('{"prompt": "Who?", "image": "bomb.png"}', ["image cannot be read", "bomb.png"]),
    (b'{"prompt": "caf\xe9"}', ["not a JSON object"]),  # latin-1, not UTF-8
    ('{"prompt": "Who?", "image": "."}', ["image cannot be read"]),  # a folder
    (r'{"prompt": "Who is \ud800?"}', ["lone surrogate", "SK747"]),  # a JSON escape Python accepts, tokenizers do not
    ('{"prompt": "Who?", "image": "pipe.png"}', ["image cannot be read", "FIFO"]),  # would block open() forever
    ('{"prompt": "' + "a" * (1 << 20) + '"}', ["the limit is 1,048,576"]),
    ("", None),  # blank lines are skipped silently (not answered, not an error)
    ('{"prompt": "What is in this image?", "image": "good.png", "id": "last"}', None),
]
GOOD = [n for n, (text, bad) in enumerate(LINES, start=1) if bad is None and text]
BAD = {n: bad for n, (_, bad) in enumerate(LINES, start=1) if bad is not None}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from steerkit.adapter import get_adapter
    from steerkit.models.zoo import save_tiny, tiny_image

    root = tmp_path_factory.mktemp("hostile_apply")
    t = tiny("llava")
    save_tiny(t, root / "model")
    hidden, num_layers = get_adapter("llava").dims(t.model.config)
    g = torch.Generator().manual_seed(0)
    tensors = {f"direction.resid_pre.{layer}": torch.randn(hidden, generator=g) for layer in range(num_layers)}
    Bundle.create(tensors, model_id="tiny-llava", architecture=t.model.config.architectures[0],
                  adapter={"name": "llava", "sha256": "0" * 64}, hidden_size=hidden, num_layers=num_layers,
                  direction={"method": "mean_diff"}, gate={"rule": "always_on"}).save(root / "bundle.safetensors")
    (root / "recipe.yaml").write_text(
        "schema_version: 1\nname: hostile-apply\nmodel: {id: model}\ngate: {rule: always_on}\n"
        "steer: {layers: {start: 0}, strength: {lambda: -1.0}}\nbundle: {path: bundle.safetensors}\n")
    tiny_image(0).save(root / "good.png")
    random.seed(0)
    (root / "corrupt.png").write_bytes(bytes(random.randrange(256) for _ in range(300)))
    (root / "bomb.png").write_bytes(bomb_png())
    os.mkfifo(root / "pipe.png")
    lines = [text if isinstance(text, bytes) else text.encode("utf-8") for text, _ in LINES]
    (root / "prompts.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root


def apply_args(work: Path, out: Path) -> list[str]:
    return ["apply", str(work / "recipe.yaml"), "--input", str(work / "prompts.jsonl"), "--out", str(out),
            "--max-new-tokens", str(MAX_NEW), "--batch-size", "2"]


def test_bad_lines_are_reported_and_good_lines_answered(work: Path) -> None:
    out = work / "answers.jsonl"
    r = CliRunner().invoke(cli, apply_args(work, out))
    text = r.output
    assert "Traceback" not in text and not (r.exception and not isinstance(r.exception, SystemExit)), text
    assert r.exit_code == 2, text  # bad lines -> invalid input, but the good ones are still written
    for n, needles in BAD.items():
        block = next((b for b in text.split("\n\n") if re.search(rf"prompts\.jsonl:{n}\s", b)), None)
        assert block is not None, f"line {n} not reported:\n{text}"
        for needle in needles:
            assert needle in block, f"line {n}: {needle!r} not in\n{block}"
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["line"] for row in rows] == GOOD
    assert all(isinstance(row["steered"], str) for row in rows)
    assert f"{len(GOOD)} answered, {len(BAD)} skipped" in text


def test_interrupted_apply_keeps_finished_batches_and_rerun_works(work: Path, monkeypatch) -> None:
    """Ctrl-C keeps every batch that finished, as whole lines (#18); a rerun then answers everything."""
    from steerkit.session import ModelSession

    out = work / "interrupted.jsonl"
    out.write_text("previous run\n")
    real = ModelSession.generate
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the first batch is done, the second is interrupted (Ctrl-C)
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ModelSession, "generate", flaky)
    r = CliRunner().invoke(cli, apply_args(work, out))
    assert r.exit_code == 130, r.output
    assert calls["n"] == 2 and "interrupted; 2 finished answers are in" in r.output and "Traceback" not in r.output
    kept = [json.loads(line) for line in out.read_text().splitlines()]  # whole JSON lines only
    assert len(kept) == 2 and {row["line"] for row in kept} <= set(GOOD)
    assert not [p.name for p in work.iterdir() if p.name.startswith(".interrupted.jsonl")]  # no temp litter

    monkeypatch.setattr(ModelSession, "generate", real)
    r = CliRunner().invoke(cli, apply_args(work, out))
    assert r.exit_code == 2, r.output  # the same bad lines as above
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == GOOD


def test_interrupt_before_any_batch_leaves_out_untouched(work: Path, monkeypatch) -> None:
    from steerkit.session import ModelSession

    out = work / "untouched.jsonl"
    out.write_text("previous run\n")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelSession, "generate", interrupted)
    r = CliRunner().invoke(cli, apply_args(work, out))
    assert r.exit_code == 130 and "nothing had finished; --out is unchanged" in r.output, r.output
    assert out.read_text() == "previous run\n"


def test_prompt_and_image_flags_are_checked(work: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["apply", str(work / "recipe.yaml"), "--prompt", "Who?", "--image",
                            str(work / "corrupt.png")])
    assert r.exit_code == 2 and "image cannot be read" in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(cli, ["apply", str(work / "recipe.yaml"), "--prompt", "Who?", "--image",
                            str(work / "bomb.png")])
    assert r.exit_code == 2 and "image cannot be read" in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(cli, ["apply", str(work / "recipe.yaml")])
    assert r.exit_code == 2 and "--input or --prompt" in r.output, r.output
    r = runner.invoke(cli, ["apply", str(work / "recipe.yaml"), "--input", str(work / "nope.jsonl")])
    assert r.exit_code == 2 and "nope.jsonl" in r.output and "Traceback" not in r.output, r.output


# ------------------------------------------------------------------ round 2 (issue #18)
def no_model(monkeypatch) -> None:
    """Fail the test if apply gets as far as loading the model: these inputs must be refused before."""
    import steerkit.remote

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(steerkit.remote, "open_session", refuse)


def refused(r, *needles: str) -> None:
    text = r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), f"crashed: {r.exception!r}\n{text}"
    assert r.exit_code == 2 and "Traceback" not in text, f"exit {r.exit_code}\n{text}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in\n{text}"


def test_out_problems_are_found_before_the_model_loads(work: Path, monkeypatch, deadline) -> None:
    no_model(monkeypatch)
    prompts = work / "prompts.jsonl"
    before = prompts.read_bytes()
    (work / "a_file").write_text("x")
    (work / "link.jsonl").symlink_to(prompts)
    cases = [(str(prompts), "--out is the --input file"),  # was: the prompts silently overwritten
             (str(work / "link.jsonl"), "--out is the --input file"),  # the same file by another name
             (str(work / "a_file" / "answers.jsonl"), "cannot write in"),  # was: a traceback after generating
             (str(work / "pipe.png"), "--out is a FIFO"),  # writing would block
             (str(work / ("o" * 300 + ".jsonl")), "306-byte name"),
             ]
    for out, needle in cases:
        with deadline():
            r = CliRunner().invoke(cli, apply_args(work, Path(out)))
        refused(r, needle, "SK748")
    assert prompts.read_bytes() == before


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero and FIFOs")
def test_special_input_files_are_refused(work: Path, monkeypatch, deadline) -> None:
    no_model(monkeypatch)
    base = ["apply", str(work / "recipe.yaml")]
    with deadline():  # were: a hang (FIFO) and a MemoryError traceback (/dev/zero)
        refused(CliRunner().invoke(cli, base + ["--input", str(work / "pipe.png")]), "FIFO", "SK740")
        refused(CliRunner().invoke(cli, base + ["--input", "/dev/zero"]), "character device", "SK740")
        refused(CliRunner().invoke(cli, base + ["--input", str(work)]), "is a directory")
        refused(CliRunner().invoke(cli, base + ["--prompt", "Who?", "--image", str(work / "pipe.png")]), "FIFO")


def test_bad_prompt_flags_are_refused(work: Path, monkeypatch) -> None:
    no_model(monkeypatch)
    base = ["apply", str(work / "recipe.yaml"), "--prompt"]
    refused(CliRunner().invoke(cli, base + [""]), "'prompt' is missing or empty")  # was: answered, exit 0
    refused(CliRunner().invoke(cli, base + ["   "]), "'prompt' is missing or empty")
    refused(CliRunner().invoke(cli, base + ["Who is \ud800?"]), "lone surrogate")


def test_remote_code_switch_needs_a_real_boolean(work: Path, monkeypatch) -> None:
    no_model(monkeypatch)
    for value in ("on", "yes", "'true'", "1", '"on"'):
        r = CliRunner().invoke(cli, ["apply", str(work / "recipe.yaml"), "--prompt", "Who?",
                                     "--set", f"model.trust_remote_code={value}"])
        refused(r, "model.trust_remote_code", "valid boolean")


def test_unreadable_or_lying_bundle_fails_before_the_model_loads(work: Path, monkeypatch, tmp_path: Path) -> None:
    import safetensors

    no_model(monkeypatch)
    (tmp_path / "empty").mkdir()
    for spec, needle in ((tmp_path / "nope.safetensors", "no such file"), (tmp_path / "empty", "holds no bundle")):
        r = CliRunner().invoke(cli, ["apply", str(work / "recipe.yaml"), "--prompt", "Who?", "--bundle", str(spec)])
        refused(r, needle, "SK431")  # was: a ~53 s extraction ending in SK405
    good = work / "bundle.safetensors"
    with safetensors.safe_open(str(good), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    bad = tmp_path / "bias.safetensors"
    gate = {**json.loads(meta["gate"]), "bias": "abc"}
    bad.write_bytes(safetensors.torch.save(tensors, metadata={**meta, "gate": json.dumps(gate)}))
    r = CliRunner().invoke(cli, ["apply", str(work / "recipe.yaml"), "--prompt", "Who?", "--bundle", str(bad)])
    refused(r, "gate.bias", "SK406")


def test_a_prompt_the_model_chokes_on_is_named_and_the_rest_answered(work: Path, monkeypatch, tmp_path) -> None:
    """A failure inside generation (not caught by the input checks) costs that line only."""
    from steerkit.session import ModelSession

    (tmp_path / "good.png").write_bytes((work / "good.png").read_bytes())
    lines = ['{"prompt": "Who is this?", "image": "good.png"}', '{"prompt": "CRASH here"}',
             '{"prompt": "Where was the person born?"}', '{"prompt": "What is in this image?", "image": "good.png"}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    real = ModelSession.generate

    def choke(self, prompts, *args, **kwargs):
        if any("CRASH" in p for p in prompts):
            raise ValueError("tokenizer exploded")
        return real(self, prompts, *args, **kwargs)

    monkeypatch.setattr(ModelSession, "generate", choke)
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(cli, ["apply", str(work / "recipe.yaml"), "--input", str(tmp_path / "in.jsonl"),
                                 "--out", str(out), "--max-new-tokens", "2", "--batch-size", "2"])
    refused(r, "in.jsonl:2", "could not process this prompt (ValueError: tokenizer exploded)", "SK749",
            "3 answered, 1 skipped")
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 3, 4]


def test_a_model_that_fails_on_everything_is_a_runtime_error(work: Path, monkeypatch, tmp_path) -> None:
    from steerkit.session import ModelSession

    def broken(self, *args, **kwargs):
        raise RuntimeError("weights are garbage")

    monkeypatch.setattr(ModelSession, "generate", broken)
    r = CliRunner().invoke(cli, ["apply", str(work / "recipe.yaml"), "--prompt", "Who?", "--max-new-tokens", "2"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "SK750" in r.output and "RuntimeError: weights are garbage" in r.output
