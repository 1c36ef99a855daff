"""The verification metrics on synthetic scores with known answers."""

import numpy as np
import pytest

from mfn_deploy.metrics import best_threshold, fold_indices, roc, tar_at_far, ten_fold_accuracy


def test_perfectly_separable_scores_give_full_accuracy_in_every_fold():
    same = np.tile([True] * 3 + [False] * 3, 10)
    scores = np.where(same, 0.9, 0.1) + np.linspace(0, 0.01, 60)
    result = ten_fold_accuracy(scores, same)
    assert result.mean == 1.0 and result.std == 0.0
    assert all(0.11 <= f.threshold <= 0.9 for f in result.folds)


def test_threshold_is_chosen_on_the_other_nine_folds():
    # Fold 0 alone says "same" above 0.5; the other nine say above 0.2. The
    # threshold applied to fold 0 must come from the nine (0.2 < t <= 0.3), so
    # fold 0's genuine pair at 0.3 is accepted and its impostor at 0.4 too.
    same = np.tile([True, False], 10)
    scores = np.tile([0.3, 0.1], 10).astype(float)
    scores[0:2] = [0.6, 0.4]  # fold 0 (first two pairs)
    result = ten_fold_accuracy(scores, same)
    assert 0.1 < result.folds[1].threshold <= 0.3
    assert result.folds[0].accuracy == 0.5  # impostor at 0.4 is above the nine-fold threshold
    assert all(f.accuracy == 1.0 for f in result.folds[1:])
    assert result.mean == pytest.approx(0.95)


def test_best_threshold_and_folds():
    assert best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1], bool)) == 0.5
    folds = fold_indices(600)
    assert [len(f) for f in folds] == [60] * 10
    assert folds[0][0] == 0 and folds[-1][-1] == 599
    with pytest.raises(ValueError):
        fold_indices(5)


def test_roc_and_tar_at_far():
    same = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.3, 0.1, 0.05])
    far, tar, _ = roc(scores, same)
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    # FAR 0 allows thresholds above the best impostor (0.75): two of four genuine.
    assert tar_at_far(scores, same, 0.0)[0] == 0.5
    # FAR 1/4 admits the 0.75 impostor, and with it the 0.7 genuine pair.
    assert tar_at_far(scores, same, 0.25)[0] == 0.75
