"""Tests of cps_repro.losses: CE with ignore, probability-OHEM CE (official semantics) and the CPS loss.

Reference values are computed independently with explicit log-softmax formulas in NumPy (float64)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cps_repro.losses import (OhemCrossEntropy, cps_loss, cross_entropy, ohem_cross_entropy, ohem_keep_mask,
                              pseudo_labels, sigmoid_rampup, class_balance_weights, balanced_cross_entropy)

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------- NumPy references
def np_log_softmax(logits, axis=1):
    z = logits - logits.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_ce(logits, target, ignore_index=255):
    """Mean of -log softmax(logits)[target] over non-ignored pixels; logits [B, C, *S], target [B, *S]."""
    logp = np_log_softmax(np.asarray(logits, dtype=np.float64))
    target = np.asarray(target)
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    picked = np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    return -picked[valid].mean()


def np_ohem_keep(logits, target, thresh, min_kept, ignore_index=255):
    """Direct reading of the recipe (§2.1): GT-class probabilities, no mining when #valid < min_kept (or
    min_kept == 0), else threshold max(thresh, min_kept-th smallest probability) over valid pixels."""
    logits = np.asarray(logits, dtype=np.float64)
    target = np.asarray(target)
    valid = target != ignore_index
    if min_kept == 0 or valid.sum() < min_kept:
        return valid
    prob = np.exp(np_log_softmax(logits))
    p_true = np.take_along_axis(prob, np.where(valid, target, 0)[:, None], axis=1)[:, 0]
    kth = np.sort(p_true[valid])[min_kept - 1]
    return valid & (p_true <= max(thresh, kth))


def np_ohem_loss(logits, target, thresh, min_kept, ignore_index=255):
    keep = np_ohem_keep(logits, target, thresh, min_kept, ignore_index)
    return np_ce(logits, np.where(keep, np.asarray(target), ignore_index), ignore_index)


def logits_with_probs(p_true, labels, n_classes=3):
    """Logits [1, C, 1, n] where pixel i gives probability p_true[i] to class labels[i] (ignored pixels: class 0),
    the rest split evenly among the other classes."""
    n = len(p_true)
    logits = np.zeros((n_classes, n))
    for i, (p, lab) in enumerate(zip(p_true, labels)):
        lab = 0 if lab == 255 else lab
        rest = (1 - p) / (n_classes - 1)
        logits[:, i] = np.log(rest)
        logits[lab, i] = np.log(p)
    return torch.tensor(logits, dtype=torch.float32).reshape(1, n_classes, 1, n)


# ---------------------------------------------------------------------------------------------- cross_entropy
def test_cross_entropy_matches_hand_computation():
    logits = np.array([[[[2.0, -1.0], [0.5, 0.0]], [[0.0, 3.0], [1.5, -2.0]], [[1.0, 1.0], [-0.5, 0.25]]]])
    target = np.array([[[0, 1], [255, 2]]])
    # explicit formula for pixel (0,0): -(2 - log(e^2 + e^0 + e^1)), etc.
    by_hand = np.mean([
        -(2.0 - math.log(math.exp(2.0) + math.exp(0.0) + math.exp(1.0))),
        -(3.0 - math.log(math.exp(-1.0) + math.exp(3.0) + math.exp(1.0))),
        -(0.25 - math.log(math.exp(0.0) + math.exp(-2.0) + math.exp(0.25))),
    ])
    got = cross_entropy(torch.tensor(logits, dtype=torch.float32), torch.tensor(target))
    assert got.item() == pytest.approx(by_hand, abs=1e-6)
    assert got.item() == pytest.approx(np_ce(logits, target), abs=1e-6)


def test_cross_entropy_ignore_index_and_random_inputs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g)
    target = torch.randint(0, 5, (2, 6, 7), generator=g)
    target[0, :3] = 255
    target[1, :, 0] = 7  # a custom ignore value
    got = cross_entropy(logits, target.masked_fill(target == 7, 255))
    assert got.item() == pytest.approx(np_ce(logits.numpy(), target.masked_fill(target == 7, 255).numpy()), abs=1e-6)
    got7 = cross_entropy(logits, target.masked_fill(target == 255, 7), ignore_index=7)
    assert got7.item() == pytest.approx(got.item(), abs=1e-6)
    assert torch.allclose(got, F.cross_entropy(logits, target.masked_fill(target == 7, 255), ignore_index=255))


def test_cross_entropy_all_ignored_is_zero_with_zero_grad():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = cross_entropy(x, torch.full((2, 4, 4), 255))
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


def test_cross_entropy_accepts_uint8_targets_and_flat_logits():
    logits = torch.randn(6, 4)
    target = torch.tensor([0, 1, 2, 3, 255, 1], dtype=torch.uint8)
    assert cross_entropy(logits, target).item() == pytest.approx(np_ce(logits.numpy(), target.numpy().astype(int)), abs=1e-6)


@pytest.mark.parametrize("target, err", [
    (torch.zeros(2, 5, 5, dtype=torch.long), ValueError),           # wrong spatial size
    (torch.zeros(3, 4, 4, dtype=torch.long), ValueError),           # wrong batch
    (torch.zeros(2, 4, 4), TypeError),                              # float target
    (torch.zeros(2, 3, 4, 4, dtype=torch.long), ValueError),        # one-hot shaped
])
def test_cross_entropy_bad_input(target, err):
    with pytest.raises(err, match="target"):
        cross_entropy(torch.randn(2, 3, 4, 4), target)


def test_cross_entropy_rejects_integer_logits():
    with pytest.raises(TypeError, match="floating point"):
        cross_entropy(torch.zeros(1, 3, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))


# ------------------------------------------------------------------------------------------------------- OHEM
P_TRUE = [0.95, 0.30, 0.80, 0.60, 0.90, 0.99, 0.45, 0.75]
LABELS = [0, 1, 2, 0, 255, 1, 2, 255]  # 6 valid pixels, 2 ignored (their probabilities must not matter)


@pytest.mark.parametrize("min_kept, expected_keep", [
    (0, [1, 1, 1, 1, 0, 1, 1, 0]),   # min_kept == 0: no mining
    (2, [0, 1, 0, 1, 0, 0, 1, 0]),   # 2nd smallest 0.45 < 0.7 -> threshold 0.7 -> 0.30, 0.60, 0.45
    (3, [0, 1, 0, 1, 0, 0, 1, 0]),   # 3rd smallest 0.60 < 0.7 -> same
    (4, [0, 1, 1, 1, 0, 0, 1, 0]),   # 4th smallest 0.80 > 0.7 -> threshold 0.80
    (5, [1, 1, 1, 1, 0, 0, 1, 0]),   # 5th smallest 0.95 -> threshold 0.95
    (6, [1, 1, 1, 1, 0, 1, 1, 0]),   # num_valid == min_kept: mining runs, threshold = max p -> all valid
    (7, [1, 1, 1, 1, 0, 1, 1, 0]),   # fewer valid pixels than min_kept: no mining
    (50000, [1, 1, 1, 1, 0, 1, 1, 0]),
])
def test_ohem_hand_made_keep_and_loss(min_kept, expected_keep):
    logits = logits_with_probs(P_TRUE, LABELS)
    target = torch.tensor(LABELS).reshape(1, 1, -1)
    keep = ohem_keep_mask(logits, target, thresh=0.7, min_kept=min_kept)
    assert keep.int().flatten().tolist() == expected_keep
    ref_keep = np_ohem_keep(logits.numpy(), target.numpy(), 0.7, min_kept)
    assert keep.numpy().tolist() == ref_keep.tolist()
    loss = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=min_kept)
    kept_p = [p for p, k in zip(P_TRUE, expected_keep) if k]
    assert loss.item() == pytest.approx(-np.mean(np.log(kept_p)), abs=1e-5)
    assert loss.item() == pytest.approx(np_ohem_loss(logits.numpy(), target.numpy(), 0.7, min_kept), abs=1e-5)


def test_ohem_ignored_pixels_never_count_as_hard():
    # the ignored pixels have tiny probabilities for their (meaningless) class 0: they must neither be kept nor
    # move the min_kept-th probability
    p_true = [0.9, 0.8, 0.01, 0.02, 0.95]
    labels = [1, 1, 255, 255, 2]
    logits = logits_with_probs(p_true, labels)
    target = torch.tensor(labels).reshape(1, 1, -1)
    keep = ohem_keep_mask(logits, target, thresh=0.7, min_kept=2)
    assert keep.flatten().tolist() == [True, True, False, False, False]   # threshold = 2nd smallest valid = 0.9


def test_ohem_random_against_numpy_reference():
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        logits = torch.randn(2, 4, 9, 11, generator=g) * 2
        target = torch.randint(0, 4, (2, 9, 11), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.2] = 255
        n_valid = int((target != 255).sum())
        for min_kept in (1, 17, n_valid - 1, n_valid, n_valid + 1):
            for thresh in (0.3, 0.7):
                keep = ohem_keep_mask(logits, target, thresh, min_kept)
                ref = np_ohem_keep(logits.numpy(), target.numpy(), thresh, min_kept)
                assert np.array_equal(keep.numpy(), ref), (trial, min_kept, thresh)
                loss = ohem_cross_entropy(logits, target, thresh, min_kept)
                assert loss.item() == pytest.approx(np_ohem_loss(logits.numpy(), target.numpy(), thresh, min_kept),
                                                    abs=1e-5)
                if 0 < min_kept <= n_valid:
                    assert keep.sum() >= min_kept


def test_ohem_case_where_kth_probability_exceeds_thresh_keeps_exactly_min_kept():
    # confident network: every valid probability > 0.7, so the threshold is the min_kept-th probability
    p_true = [0.99, 0.91, 0.97, 0.93, 0.95, 0.98]
    labels = [0, 1, 2, 0, 1, 2]
    logits = logits_with_probs(p_true, labels)
    target = torch.tensor(labels).reshape(1, 1, -1)
    keep = ohem_keep_mask(logits, target, thresh=0.7, min_kept=3)
    assert keep.flatten().tolist() == [False, True, False, True, True, False]   # 0.91, 0.93, 0.95
    assert ohem_cross_entropy(logits, target, 0.7, 3).item() == pytest.approx(
        -np.mean(np.log([0.91, 0.93, 0.95])), abs=1e-5)


def test_ohem_gradient_only_on_kept_pixels():
    logits = logits_with_probs(P_TRUE, LABELS).requires_grad_()
    target = torch.tensor(LABELS).reshape(1, 1, -1)
    ohem_cross_entropy(logits, target, 0.7, 2).backward()
    nonzero = (logits.grad.abs().sum(dim=1) > 0).flatten().tolist()
    assert nonzero == [False, True, False, True, False, False, True, False]


def test_ohem_all_ignored_and_module_wrapper():
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    t = torch.full((1, 4, 4), 255)
    for min_kept in (0, 5):
        loss = ohem_cross_entropy(x, t, 0.7, min_kept)
        assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0
    mod = OhemCrossEntropy(thresh=0.7, min_kept=3)
    logits = logits_with_probs(P_TRUE, LABELS)
    target = torch.tensor(LABELS).reshape(1, 1, -1)
    assert mod(logits, target).item() == pytest.approx(ohem_cross_entropy(logits, target, 0.7, 3).item())
    assert "min_kept=3" in repr(mod)


@pytest.mark.parametrize("min_kept", [-1, 2.5, True])
def test_ohem_bad_min_kept(min_kept):
    with pytest.raises(ValueError, match="min_kept"):
        ohem_cross_entropy(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 0.7, min_kept)


# ------------------------------------------------------------------------------------------------------- CPS
def test_cps_loss_value_matches_hand_computation():
    g = torch.Generator().manual_seed(2)
    l1, l2 = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    y1, y2 = l1.numpy().argmax(1), l2.numpy().argmax(1)
    expected = np_ce(l1.numpy(), y2) + np_ce(l2.numpy(), y1)
    assert cps_loss(l1, l2).item() == pytest.approx(expected, abs=1e-6)


def test_cps_loss_no_gradient_into_pseudo_label_side():
    g = torch.Generator().manual_seed(3)
    s1, s2, t1, t2 = (torch.randn(2, 3, 4, 4, generator=g).requires_grad_() for _ in range(4))
    loss = cps_loss(s1, s2, t1, t2)
    loss.backward()
    assert t1.grad is None and t2.grad is None
    assert not loss.grad_fn is None
    # student 1 learns from teacher 2's argmax, student 2 from teacher 1's
    expected = (t1.detach(), t2.detach())
    ref1, ref2 = s1.detach().clone().requires_grad_(), s2.detach().clone().requires_grad_()
    (F.cross_entropy(ref1, expected[1].argmax(1)) + F.cross_entropy(ref2, expected[0].argmax(1))).backward()
    assert torch.allclose(s1.grad, ref1.grad) and torch.allclose(s2.grad, ref2.grad)


def test_cps_loss_plain_variant_gradient_equals_ce_with_fixed_labels():
    g = torch.Generator().manual_seed(4)
    l1, l2 = (torch.randn(3, 5, 6, 6, generator=g).requires_grad_() for _ in range(2))
    cps_loss(l1, l2).backward()
    fixed_y1, fixed_y2 = l1.detach().argmax(1).clone(), l2.detach().argmax(1).clone()
    r1, r2 = (x.detach().clone().requires_grad_() for x in (l1, l2))
    F.cross_entropy(r1, fixed_y2).backward()
    F.cross_entropy(r2, fixed_y1).backward()
    assert torch.allclose(l1.grad, r1.grad, atol=1e-7) and torch.allclose(l2.grad, r2.grad, atol=1e-7)
    # hand-derived gradient (softmax - onehot(other argmax)) / N: a soft-target or non-detached version would differ
    n = fixed_y2.numel()
    manual = (torch.softmax(l1.detach(), 1) - F.one_hot(fixed_y2, 5).permute(0, 3, 1, 2)) / n
    assert torch.allclose(l1.grad, manual, atol=1e-7)


def test_cps_loss_through_shared_parameters_only_student_path():
    # one "network" (a linear map) produces both the student and the teacher logits: the gradient must equal the
    # gradient through the student path alone
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, 3, generator=g, requires_grad=True)
    x = torch.randn(2, 3, 4, 4, generator=g)
    net = lambda inp: torch.einsum("cd,bdhw->bchw", w, inp)  # noqa: E731
    logits_a, logits_b = net(x), net(x.flip(-1))
    cps_loss(logits_a, logits_b).backward()
    got = w.grad.clone()
    w.grad = None
    ya, yb = logits_a.detach().argmax(1), logits_b.detach().argmax(1)
    (F.cross_entropy(net(x), yb) + F.cross_entropy(net(x.flip(-1)), ya)).backward()
    assert torch.allclose(got, w.grad, atol=1e-6)


def test_concatenated_mean_is_half_the_sum_of_separate_means():
    g = torch.Generator().manual_seed(6)
    lab1, unl1, lab2, unl2 = (torch.randn(4, 3, 5, 5, generator=g) for _ in range(4))
    concat = cps_loss(torch.cat([lab1, unl1]), torch.cat([lab2, unl2]))
    separate = cps_loss(lab1, lab2) + cps_loss(unl1, unl2)
    assert concat.item() == pytest.approx(separate.item() / 2, abs=1e-6)
    # not equal to the plain sum (a λ mix-up would show)
    assert abs(concat.item() - separate.item()) > 0.1


def test_pseudo_labels_detached_argmax():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = pseudo_labels(x)
    assert y.dtype == torch.long and not y.requires_grad and torch.equal(y, x.detach().argmax(1))


def test_cps_loss_bad_input():
    a = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="one shape"):
        cps_loss(a, torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="one shape"):
        cps_loss(a, a, torch.randn(2, 4, 4, 4), a)
    with pytest.raises(ValueError, match="ignore_index"):
        cps_loss(a, a, ignore_index=1)
    with pytest.raises(ValueError, match="logits"):
        cps_loss(a, torch.zeros(2, 3, 4, 4, dtype=torch.long))


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(20, 10) == 1.0 and sigmoid_rampup(-3, 10) == math.exp(-5)
    assert sigmoid_rampup(4, 0) == 1.0


# --------------------------------------------------------------------------------------------- class balancing
def np_balanced_ce(logits, labels, power):
    "NumPy reference: per-pixel CE weighted by share(class)^-power, weights normalised to mean 1."
    ls = np_log_softmax(logits.astype(np.float64))
    ce = -np.take_along_axis(ls, labels[:, None], axis=1)[:, 0]
    share = np.bincount(labels.ravel(), minlength=logits.shape[1]) / labels.size
    w = share[labels] ** -power
    return float((ce * w / w.mean()).mean())


@pytest.mark.parametrize('power', [0.0, 0.5, 1.0])
def test_balanced_cross_entropy_matches_numpy(power):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    labels = torch.randint(0, 4, (2, 5, 6), generator=g)
    labels[0] = 0                                            # a dominant class
    got = balanced_cross_entropy(logits, labels, power).item()
    assert got == pytest.approx(np_balanced_ce(logits.numpy(), labels.numpy(), power), rel=1e-5)


def test_class_balance_weights_upweight_rare_classes():
    y = torch.tensor([[0] * 9 + [1]])
    w = class_balance_weights(y, 3, 1.0)
    assert w.mean().item() == pytest.approx(1.0)
    assert (w[0, 9] / w[0, 0]).item() == pytest.approx(9.0)     # inverse frequency
    assert torch.equal(class_balance_weights(y, 3, 0.0), torch.ones(1, 10))
    one_class = class_balance_weights(torch.zeros(2, 4, dtype=torch.long), 3, 0.5)
    assert torch.allclose(one_class, torch.ones(2, 4))           # a single class: the plain mean


def test_cps_loss_balance_zero_is_the_paper_and_balance_changes_it():
    g = torch.Generator().manual_seed(4)
    s1, s2, t1, t2 = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(4))
    assert torch.equal(cps_loss(s1, s2, t1, t2, balance=0.0), cps_loss(s1, s2, t1, t2))
    bal = cps_loss(s1, s2, t1, t2, balance=0.5)
    ref = balanced_cross_entropy(s1, t2.argmax(1), 0.5) + balanced_cross_entropy(s2, t1.argmax(1), 0.5)
    assert torch.allclose(bal, ref)
    s = s1.clone().requires_grad_(); t = t2.clone().requires_grad_()
    cps_loss(s, s2, t1, t, balance=0.5).backward()
    assert t.grad is None and s.grad.abs().sum() > 0            # no gradient through the pseudo labels or weights


def test_class_balance_bad_input():
    with pytest.raises(ValueError, match='power'):
        class_balance_weights(torch.zeros(1, 2, dtype=torch.long), 3, -1.0)
    with pytest.raises(ValueError, match='integer'):
        class_balance_weights(torch.zeros(1, 2), 3, 0.5)
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        class_balance_weights(torch.tensor([[0, 255]]), 3, 0.5)
    with pytest.raises(ValueError, match='balance'):
        cps_loss(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2), balance=-0.1)
