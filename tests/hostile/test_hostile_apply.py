"""``steerkit apply`` on broken input lines and an interrupted run (issue #6).

Every bad jsonl line is reported with its line number, the good lines are still answered and written,
and an interrupted ``--out`` run leaves no partial file behind. Runs on a tiny saved LLaVA with a
hand-built bundle and ``gate: {rule: always_on}``, so no extraction is needed.
"""

from __future__ import annotations

import json
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
