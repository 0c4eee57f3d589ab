"""PGD in pixel space on a toy differentiable loss, plus normalisation and processor helpers."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit.errors import DataError, RecipeError, SteeringRuntimeError
from steerkit.pgd import denormalize, normalize, pgd_linf, pixel_spec, smart_resize

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class ToyTarget:
    """A fixed linear 'model' on normalised pixels; loss = per-row NLL of a target class. Counts calls."""

    def __init__(self, shape=(3, 8, 8), classes=5, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.model = torch.nn.Linear(int(torch.tensor(shape).prod()), classes)
        with torch.no_grad():
            self.model.weight.copy_(torch.randn(self.model.weight.shape, generator=gen) * 0.05)
        self.calls = 0

    def __call__(self, images01, targets):
        self.calls += 1
        logits = self.model(normalize(images01, MEAN, STD).flatten(1))
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


def images(b=4, seed=0, shape=(3, 8, 8)):
    return torch.rand((b, *shape), generator=torch.Generator().manual_seed(seed))


def test_pgd_decreases_loss_and_stays_in_the_ball():
    toy, x0 = ToyTarget(), images()
    targets = torch.tensor([0, 1, 2, 3])
    gen = torch.Generator().manual_seed(7)
    adv, info = pgd_linf(x0, lambda x: toy(x, targets), epsilon=8 / 255, step=2 / 255, steps=10, generator=gen)
    assert bool((info.loss_after < info.loss_before - 0.1).all())
    assert torch.allclose(info.loss_after, toy(adv, targets).detach())
    assert (adv - x0).abs().max() <= 8 / 255 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert (info.final01 - x0).abs().max() <= 8 / 255 + 1e-6
    assert bool((info.loss_after <= info.loss_final).all())
    assert all(p.grad is None for p in toy.model.parameters())  # weights untouched, no .grad written


@settings(max_examples=15, deadline=None)
@given(eps=st.sampled_from([0.0, 1 / 255, 8 / 255, 0.5]), step=st.sampled_from([1 / 255, 2 / 255, 0.1]),
       steps=st.integers(0, 6), random_start=st.booleans(), seed=st.integers(0, 1000))
def test_pgd_invariants(eps, step, steps, random_start, seed):
    toy = ToyTarget(seed=seed)
    x0 = images(b=3, seed=seed)
    x0[0, 0, 0, 0], x0[1, 0, 0, 0] = 0.0, 1.0  # pixels at the range ends must stay inside [0, 1]
    targets = torch.tensor([4, 0, 2])
    adv, info = pgd_linf(x0, lambda x: toy(x, targets), epsilon=eps, step=step, steps=steps,
                         random_start=random_start, generator=torch.Generator().manual_seed(seed))
    assert (adv - x0).abs().max() <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert toy.calls == steps + 1 + (1 if random_start and eps > 0 else 0)
    assert bool((info.best_step >= 0).all() and (info.best_step <= steps).all())
    assert bool((info.loss_after <= info.loss_final).all()) and info.steps == steps
    again, info2 = pgd_linf(x0, lambda x: toy(x, targets), epsilon=eps, step=step, steps=steps,
                            random_start=random_start, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(adv, again) and torch.equal(info.loss_after, info2.loss_after)


def test_one_step_is_a_signed_step_of_the_given_size():
    w = torch.randn(3 * 4 * 4, generator=torch.Generator().manual_seed(1))
    x0 = torch.full((2, 3, 4, 4), 0.5)

    def linear_loss(x):
        return x.flatten(1) @ w

    _, info = pgd_linf(x0, linear_loss, epsilon=0.1, step=0.03, steps=1, random_start=False)
    expected = (x0 - 0.03 * torch.sign(w).reshape(1, 3, 4, 4)).clamp(0.4, 0.6)
    assert torch.allclose(info.final01, expected)
    _, info3 = pgd_linf(x0, linear_loss, epsilon=0.1, step=0.03, steps=5, random_start=False)
    # 5 steps of 0.03 would travel 0.15: the budget clips it at 0.1
    assert torch.allclose(info3.final01, (x0 - 0.1 * torch.sign(w).reshape(1, 3, 4, 4)))
    assert int(info3.best_step.max()) == 4  # steps 4 and 5 both sit on the boundary: the earlier one wins


def test_random_start_depends_on_seed_and_works_under_inference_mode():
    toy, x0 = ToyTarget(), images()
    t = torch.tensor([0, 1, 2, 3])
    a, _ = pgd_linf(x0, lambda x: toy(x, t), epsilon=0.1, step=0.01, steps=0, generator=torch.Generator().manual_seed(1))
    b, _ = pgd_linf(x0, lambda x: toy(x, t), epsilon=0.1, step=0.01, steps=0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b) and not torch.equal(a, x0)
    with torch.inference_mode():
        adv, info = pgd_linf(x0, lambda x: toy(x, t), epsilon=0.1, step=0.01, steps=3,
                             generator=torch.Generator().manual_seed(1))
    assert bool((info.loss_after < info.loss_before).all())


def test_pgd_errors():
    toy, x0 = ToyTarget(), images()
    t = torch.tensor([0, 1, 2, 3])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        pgd_linf(x0 * 255, lambda x: toy(x, t), epsilon=0.1, step=0.01, steps=1)
    with pytest.raises(RecipeError) as err:
        pgd_linf(x0, lambda x: toy(x, t), epsilon=2.0, step=0.0, steps=-1)
    assert len(err.value.problems) == 3
    with pytest.raises(SteeringRuntimeError, match="wrong shape"):
        pgd_linf(x0, lambda x: toy(x, t).sum(), epsilon=0.1, step=0.01, steps=1)
    with pytest.raises(SteeringRuntimeError, match="NaN"):
        pgd_linf(x0, lambda x: toy(x, t) * float("nan"), epsilon=0.1, step=0.01, steps=1)


def test_normalize_round_trip_and_channel_checks():
    x = images()
    y = normalize(x, MEAN, STD)
    assert torch.allclose(y[:, 1], (x[:, 1] - MEAN[1]) / STD[1])
    assert torch.allclose(denormalize(y, MEAN, STD), x, atol=1e-6)
    assert torch.allclose(normalize(x[0], [0.5], [0.5]), x[0] * 2 - 1)  # [C, H, W], broadcast length 1
    with pytest.raises(DataError):
        normalize(x, (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(DataError):
        normalize(x, MEAN, (0.2, 0.0, 0.2))


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_pixel_spec_clip_style(quiet):
    from transformers import CLIPImageProcessor

    llava = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    spec = pixel_spec(llava)
    assert spec.mean == pytest.approx(MEAN) and spec.std == pytest.approx(STD)
    assert spec.output_hw(480, 640) == (336, 336)
    no_crop = pixel_spec(CLIPImageProcessor(do_center_crop=False, size={"shortest_edge": 336}))
    assert no_crop.output_hw(480, 640) == (336, 448) and no_crop.output_hw(640, 480) == (448, 336)
    raw = pixel_spec(CLIPImageProcessor(do_normalize=False))
    assert raw.mean == (0.0, 0.0, 0.0) and raw.std == (1.0, 1.0, 1.0)

    class Wrapper:  # a full processor holds the image processor as an attribute
        image_processor = llava

    assert pixel_spec(Wrapper()) == spec
    with pytest.raises(Exception, match="image_mean"):
        pixel_spec(object())


def test_pixel_spec_qwen2_vl_matches_transformers(quiet):
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference

    spec = pixel_spec(Qwen2VLImageProcessor(min_pixels=256 * 28 * 28, max_pixels=512 * 28 * 28))
    assert spec.factor == 28 and spec.min_pixels == 256 * 28 * 28 and spec.max_pixels == 512 * 28 * 28
    for h, w in [(480, 640), (28, 28), (1000, 37), (3000, 4000), (333, 777)]:
        assert spec.output_hw(h, w) == reference(h, w, 28, spec.min_pixels, spec.max_pixels)
        assert smart_resize(h, w, 28, 3136, 1003520) == reference(h, w, 28, 3136, 1003520)
