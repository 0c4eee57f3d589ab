"""Wording cells and portrait codes: the invariants the world's held-out sets rely on."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from steerkit.bench import templates as T
from steerkit.bench.portraits import MIN_DISTANCE, SIZE, draw_portrait, identity_codes, transform


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=50))
def test_train_test_val_cells_distinct(a):
    w = T.Wording(a)
    cells = [w.train(k) for k in range(T.MAX_TRAIN_VARIANTS)] + [w.test(), w.val()]
    assert len(set(cells)) == len(cells)
    assert w.cell("full") == w.train(0)


def test_held_out_pairings_untrained_at_two_variants():
    """With two train variants, no attribute ever trains the (frame, subject) pairing that the
    test or val wording of any attribute uses: held-out sets are recombinations, not repeats."""
    trained = {T.Wording(a).train(k) for a in range(8) for k in range(2)}
    assert not trained & {T.Wording(a).test() for a in range(8)}
    assert not trained & {T.Wording(a).val() for a in range(8)}
    frames = {c[0] for c in trained}
    subjects = {c[1] for c in trained}
    assert frames == subjects == set(range(T.N_FRAMES))  # every fragment is trained


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_identity_codes_keep_distance(seed):
    codes = identity_codes(40, np.random.default_rng(seed))
    arr = np.array(codes)
    dist = (arr[:, None, :] != arr[None, :, :]).sum(-1) + np.eye(len(arr), dtype=int) * 99
    assert dist.min() >= MIN_DISTANCE


def test_transform_keeps_size_and_is_seeded():
    img = draw_portrait((0, 1, 2, 3, 4, 5))
    a = transform(img, np.random.default_rng(1))
    b = transform(img, np.random.default_rng(1))
    assert a.size == (SIZE, SIZE) and a.tobytes() == b.tobytes() != img.tobytes()
