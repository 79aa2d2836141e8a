"""Two computations of one model's predictions agree when they differ on near ties only.

Two float32 programs that compute the same probabilities (normlab's and Keras' or onnxruntime's, XLA's GEMM and a
BLAS', AVX2 and AVX-512, training's vmapped evaluation and a plain one) sum in different orders, so they differ by
rounding: at most 3.9e-7 in any probability on the 10,000 test images (bn-before after an epoch: normlab against
Keras, folded or not; XLA's GEMM against MKL and OpenBLAS: 3.0e-7). An image changes class between two of them
only if its two top probabilities are within twice that, so an accuracy compared to the last image is a coin
toss on such near ties: on issue 28's AVX2 EPYC Keras flipped one test image of that run, which has one with a
top-2 gap of 1.3e-7, and the recorded accuracy, k / 10,000 in float32, was then 1.00009e-4 away. Instead,
every image whose class differs must be a near tie by normlab's own probabilities, and the counts of correct
images may differ by no more than the near ties. A real bug moves probabilities by far more than rounding and
flips images that are not near ties: a fold with PyTorch's epsilon instead of the layer's (1.2e-3 in the
probabilities) flipped images with gaps of 4.7e-5 and 1.6e-4; one without the moving mean, 3,990 of them.
"""

import numpy as np

# A top-2 probability gap below this is a near tie: 25x the largest rounding difference measured between two
# programs (3.9e-7, so a flip needs a gap below 7.8e-7), and below the gaps of the images the subtlest bug above
# flipped.
NEAR_TIE = 1e-5


def top2_gap(probabilities) -> np.ndarray:
    """Per row, the highest probability minus the second highest."""
    top = np.sort(np.asarray(probabilities, np.float64), axis=-1)
    return top[..., -1] - top[..., -2]


def assert_same_predictions(ours, theirs, near_tie: float = NEAR_TIE) -> int:
    """``theirs`` predicts the class ``ours`` (normlab's probabilities, one row per image) predicts, but on images
    that are near ties in ``ours``; returns how many images differ."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    differ = np.flatnonzero(ours.argmax(axis=-1) != theirs.argmax(axis=-1))
    gaps = top2_gap(ours[differ])
    clear = gaps >= near_tie
    assert not clear.any(), (f"{len(differ)} of {len(ours)} images change class, {clear.sum()} of them not near "
                             f"ties (top-2 gap >= {near_tie:g}): images {differ[clear][:10].tolist()}, gaps "
                             f"{np.round(gaps[clear][:10], 6).tolist()}")
    return len(differ)


def assert_accuracy_agrees(accuracy: float, ours, labels, near_tie: float = NEAR_TIE) -> None:
    """``accuracy``, measured by another program with the same weights on the images of ``ours`` (a run's recorded
    test accuracy, a model file's evaluation), counts the images ``ours`` gets right, give or take its near ties."""
    labels = np.asarray(labels)
    counted = accuracy * len(labels)
    assert abs(counted - round(counted)) < 0.01, f"{accuracy} is not a count of {len(labels)} images"
    correct = int(np.sum(np.asarray(ours).argmax(axis=-1) == labels))
    ties = int(np.sum(top2_gap(ours) < near_tie))
    assert abs(round(counted) - correct) <= ties, (f"{round(counted)} of {len(labels)} images right ({accuracy}), "
                                                   f"normlab gets {correct} right and has {ties} near ties")


# Two trainings that differ only by rounding (another program, GEMM or device split) predict with weights equal to
# ~1e-7 (vmapped seeds and one alone, XLA's GEMM and a BLAS' after an epoch: 1.2e-7), which moves probabilities by
# as little. Rounding tips a prediction only where its top-2 gap is below twice that; 5 of the 10,000 test images
# have one below 5e-5 (bn-before after an epoch), so of a few thousand predictions ~0.01 are expected to tip. Two
# images is the margin; a real bug (seeds mixed, a device's rows dropped) moves a count by far more.
TRAINING_FLIPS = 2


def assert_counts_agree(accuracy: float, other: float, n: int, flips: int = TRAINING_FLIPS) -> None:
    """Two trainings' accuracies over the same ``n`` predictions (a history's, whose per-image probabilities are
    gone): counts of correct predictions that differ by at most ``flips``."""
    counts = [accuracy * n, other * n]
    assert all(abs(c - round(c)) < 0.01 for c in counts), f"{accuracy}, {other}: not counts of {n}"
    assert abs(round(counts[0]) - round(counts[1])) <= flips, f"{accuracy} vs {other} of {n}: more than {flips} apart"
