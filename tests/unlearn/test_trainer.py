"""The training loop on a tiny LLaVA: GA forgets, references are the vanilla model, LoRA stays in the
language model and merges, costs are counted, and saving is atomic."""

from __future__ import annotations

import pytest
import torch

from steerkit.unlearn import losses as L
from steerkit.unlearn.trainer import _Reference, lora_targets, save_checkpoint, unlearn_session


def _forget_nll(session, pairs) -> float:
    enc = session.encode([p.prompt for p in pairs], [p.image for p in pairs], [p.answer for p in pairs],
                         padding_side="right")
    with torch.no_grad():
        return float(L.answer_nll(session.model(**enc.inputs).logits, enc.labels).mean())


def test_ga_raises_forget_nll(session, pairs, make_config):
    forget, retain = pairs
    before = _forget_nll(session, forget)
    stats = unlearn_session(session, forget, retain, make_config("ga", steps=4), progress=False)
    after = _forget_nll(session, forget)
    assert after > before + 0.5
    assert stats.final_losses["forget_nll"] > stats.first_losses["forget_nll"]
    assert not any("lora" in n for n, _ in session.model.named_parameters())  # merged away
    assert not session.model.training


def test_lora_targets_only_the_decoder(session):
    names = lora_targets(session, "all_linear")
    assert names and all(n.startswith("model.language_model.layers.") for n in names)
    assert lora_targets(session, ["q_proj"]) == [n for n in names if n.endswith(".q_proj")]
    from steerkit.unlearn.config import UnlearnConfigError

    with pytest.raises(UnlearnConfigError, match="no LoRA target"):
        lora_targets(session, ["qkv"])


def test_kl_and_npo_start_at_the_reference(session, pairs, make_config):
    forget, retain = pairs
    stats = unlearn_session(session, forget, retain, make_config("kl_min", retain_weight=1.0), progress=False)
    assert stats.history[0]["retain_kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA B = 0: model == reference
    assert stats.history[-1]["retain_kl"] > 0
    assert stats.reference_forward_passes == 3 * 2  # one reference forward per retain example per step


def test_npo_first_loss_and_counts(session, pairs, make_config):
    forget, retain = pairs
    stats = unlearn_session(session, forget, retain, make_config("npo", beta=0.5), progress=False)
    assert stats.history[0]["loss"] == pytest.approx((2 / 0.5) * torch.log(torch.tensor(2.0)).item(), rel=1e-4)
    assert stats.history[0]["forget_nll_minus_ref"] == pytest.approx(0.0, abs=1e-4)
    assert stats.reference_forward_passes == len(forget)  # reference NLLs computed once, up front
    assert stats.forward_passes == stats.backward_passes == 3 * 2
    assert stats.retain_pairs == len(retain)


def test_reference_is_the_vanilla_model_with_adapters_off(session, pairs, make_config):
    from peft import LoraConfig, get_peft_model

    enc = session.encode(["Who is my friend?"], [None])
    with torch.no_grad():
        vanilla = session.model(**enc.inputs).logits.clone()
    peft_model = get_peft_model(session.model, LoraConfig(r=4, target_modules=lora_targets(session, ["q_proj"]),
                                                          init_lora_weights=False))  # B != 0: the model moved
    with torch.no_grad():
        moved = session.model(**enc.inputs).logits
    ref = _Reference(session.model, peft_model).logits(enc.inputs)
    assert not torch.allclose(moved, vanilla, atol=1e-4)
    assert torch.allclose(ref, vanilla, atol=1e-6)


def test_ga_diff_counts_and_changed_params(session, pairs, make_config):
    forget, retain = pairs
    cfg = make_config("ga_diff", retain_batch_size=3, lr=1e-3)
    stats = unlearn_session(session, forget, retain, cfg, progress=False)
    # forget: 4 pairs in batches of 2 (2, 2, 2); retain: 4 pairs in batches of 3 (3, 1, then a new epoch: 3)
    assert stats.forward_passes == stats.backward_passes == 3 * 2 + (3 + 1 + 3)
    n_targets = len(lora_targets(session, cfg.lora.target_modules))
    assert stats.changed_tensors == n_targets
    assert 0 < stats.changed_params <= stats.total_params
    assert stats.trainable_params > 0 and stats.train_seconds > 0
    assert stats.memory["rss_peak_mib"] > 0


def test_full_mode_trains_decoder_layers_only(session, pairs, make_config):
    forget, retain = pairs
    vision = {n: p.detach().clone() for n, p in session.model.named_parameters() if "vision_tower" in n}
    stats = unlearn_session(session, forget, retain, make_config("kl_min", mode="full"), progress=False)
    assert stats.changed_tensors > 0
    after = dict(session.model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in vision.items())


def test_interrupted_save_leaves_nothing(session, tmp_path, monkeypatch):
    import steerkit.models.processors as P

    def boom(*a, **k):
        raise KeyboardInterrupt

    out = tmp_path / "ckpt"
    monkeypatch.setattr(P, "save_processor", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(session, out, {"x": 1})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either
    monkeypatch.undo()
    save_checkpoint(session, out, {"x": 1})  # a complete one ...
    monkeypatch.setattr(P, "save_processor", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(session, out, {"x": 2})  # ... survives an interrupted overwrite
    assert (out / "steerkit_unlearn.json").read_text().strip().endswith("}")
    assert '"x": 1' in (out / "steerkit_unlearn.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_stopped_run_leaves_the_vanilla_weights(session, pairs, make_config):
    forget, retain = pairs
    before = {n: p.detach().clone() for n, p in session.model.named_parameters()}

    def stop(step, sess):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        unlearn_session(session, forget, retain, make_config("ga"), progress=False, on_step=stop, callback_steps=[2])
    after = dict(session.model.named_parameters())
    assert after.keys() == before.keys()  # no LoRA layers left behind
    assert all(torch.equal(after[n], v) for n, v in before.items())
