"""Tests of cps_repro.cutmix: the official box-mask distribution (against a per-sample NumPy oracle written from
the recipe text), reproducibility through torch.Generator, half masks and mixing."""
import math

import numpy as np
import pytest
import torch

from cps_repro.cutmix import (HALF_SIDES, box_masks, box_uniforms, boxes_from_uniforms, half_masks, masks_from_boxes,
                              mix)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------- independent oracle
def oracle_mask(u, height, width, prop_range=(0.25, 0.5)):
    """The recipe's algorithm (§3) for one sample, box by box, NumPy float64, Python-int slicing.
    u: [n_boxes, 4] uniforms (area, aspect, top, left)."""
    n_boxes = len(u)
    lo, hi = prop_range
    mask = np.zeros((height, width), dtype=np.float32)
    for u_area, u_aspect, u_top, u_left in u:
        p = lo + (hi - lo) * u_area
        y_prop = np.exp(u_aspect * np.log(p))
        x_prop = p / y_prop
        y_prop, x_prop = y_prop * np.sqrt(1.0 / n_boxes), x_prop * np.sqrt(1.0 / n_boxes)
        bh, bw = np.round(y_prop * height), np.round(x_prop * width)
        y0, x0 = np.round((height - bh) * u_top), np.round((width - bw) * u_left)
        sl = (slice(int(y0), int(y0 + bh)), slice(int(x0), int(x0 + bw)))
        mask[sl] = 1 - mask[sl]
    return mask


def oracle_fractions(n, height, width, rng, prop_range=(0.25, 0.5), n_boxes=3):
    """Selected fraction of n oracle masks, drawn with NumPy in the official order (areas, aspects, positions)."""
    props = rng.uniform(prop_range[0], prop_range[1], size=(n, n_boxes))
    aspects = rng.uniform(0, 1, size=(n, n_boxes))
    positions = rng.uniform(0, 1, size=(n, n_boxes, 2))
    out = np.empty(n)
    for i in range(n):
        u = np.concatenate([((props[i] - prop_range[0]) / (prop_range[1] - prop_range[0]))[:, None],
                            aspects[i][:, None], positions[i]], axis=1)
        out[i] = oracle_mask(u, height, width, prop_range).mean()
    return out


def fraction_upper_bound(height, width, prop_high=0.5, n_boxes=3):
    """Each box: (hH + 1/2)(wW + 1/2) pixels at most, hw = p/n_boxes; hH + wW <= s·max(H + pW, pH + W)."""
    s = math.sqrt(1.0 / n_boxes)
    return prop_high + n_boxes * (s * max(height + prop_high * width, prop_high * height + width) / 2 + 0.25) / (
        height * width)


@pytest.fixture(scope="module")
def many_masks():
    g = torch.Generator().manual_seed(0)
    uniforms = box_uniforms(20_000, 3, g)
    boxes = boxes_from_uniforms(uniforms, 64, 64)
    counts = torch.cat([masks_from_boxes(b, 64, 64).sum(dim=(1, 2, 3)) for b in boxes.split(5000)]).long()
    return uniforms, boxes, counts.double() / (64 * 64), counts


# ------------------------------------------------------------------------------------------------- box masks
def test_box_masks_shape_dtype_values():
    m = box_masks(16, 40, 56, torch.Generator().manual_seed(0))
    assert m.shape == (16, 1, 40, 56) and m.dtype == torch.float32
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}
    assert box_masks(0, 8, 8).shape == (0, 1, 8, 8)


def test_identical_to_oracle_for_the_same_uniforms():
    u_all = box_uniforms(300, 3, torch.Generator().manual_seed(1))
    for height, width, n in ((64, 64, 300), (31, 50, 300), (512, 512, 40), (800, 800, 20)):
        u = u_all[:n]
        ours = masks_from_boxes(boxes_from_uniforms(u, height, width), height, width)[:, 0].numpy()
        ref = np.stack([oracle_mask(ui, height, width) for ui in u.numpy()])
        assert np.array_equal(ours, ref), (height, width)


def test_identical_to_oracle_other_prop_range_and_box_count():
    u = box_uniforms(200, 5, torch.Generator().manual_seed(2))
    ours = masks_from_boxes(boxes_from_uniforms(u, 48, 40, (0.1, 0.9)), 48, 40)[:, 0].numpy()
    ref = np.stack([oracle_mask(ui, 48, 40, (0.1, 0.9)) for ui in u.numpy()])
    assert np.array_equal(ours, ref)


def test_boxes_are_inside_and_sized_as_recipe(many_masks):
    uniforms, boxes, _, _ = many_masks
    y0, x0, y1, x1 = boxes.unbind(-1)
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y1 <= 64).all() and (x1 <= 64).all()
    assert ((y1 - y0) >= 1).all() and ((x1 - x0) >= 1).all()
    p = 0.25 + 0.25 * uniforms[..., 0]
    h = p ** uniforms[..., 1] * math.sqrt(1 / 3)
    w = p / p ** uniforms[..., 1] * math.sqrt(1 / 3)
    assert ((y1 - y0).double() - h * 64).abs().max() <= 0.5 + 1e-9
    assert ((x1 - x0).double() - w * 64).abs().max() <= 0.5 + 1e-9
    assert ((h * w) - p / 3).abs().max() < 1e-12          # each box covers p/3 before rounding


def test_selected_fraction_bounds_and_xor_parity(many_masks):
    _, boxes, fracs, counts = many_masks
    ub = fraction_upper_bound(64, 64)
    assert ub == pytest.approx(0.5205, abs=1e-4)
    assert fracs.min() >= 0.0 and fracs.max() <= ub
    areas = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
    total = areas.sum(-1)
    assert (counts <= total).all()                                             # XOR only removes pixels
    assert (counts >= 2 * areas.max(-1).values - total).all()                  # largest box minus the others
    assert ((counts - total) % 2 == 0).all()                                   # XOR keeps the parity of the sum
    # the spread covers most of the allowed range
    assert fracs.max() > 0.45 and fracs.min() < 0.1


def test_mean_fraction_matches_numpy_oracle(many_masks):
    _, _, fracs, _ = many_masks
    ref = oracle_fractions(20_000, 64, 64, np.random.default_rng(0))
    # each mean has a standard error of about 0.0005
    assert abs(fracs.mean().item() - ref.mean()) < 0.005
    assert abs(fracs.std().item() - ref.std()) < 0.005
    assert 0.23 < fracs.mean().item() < 0.27          # about a quarter of the image (overlaps XOR away)


def test_exact_cancellation_gives_an_empty_mask():
    # A (34x20) tiled by B (17x20 on top) and C (17x20 below): reachable with official parameters -> lower bound 0
    def uniforms_for(bh, bw, top, left, size=64):
        p = 3 * bh * bw / size ** 2
        return [(p - 0.25) / 0.25, math.log(bh / size / math.sqrt(1 / 3)) / math.log(p),
                top / (size - round(bh)), left / (size - round(bw))]
    u = torch.tensor([[uniforms_for(33.6, 19.6, 0, 0), uniforms_for(17.4, 20.4, 0, 0),
                       uniforms_for(17.4, 20.4, 17, 0)]], dtype=torch.float64)
    assert ((u >= 0) & (u <= 1)).all()
    assert boxes_from_uniforms(u, 64, 64)[0].tolist() == [[0, 0, 34, 20], [0, 0, 17, 20], [17, 0, 34, 20]]
    assert masks_from_boxes(boxes_from_uniforms(u, 64, 64), 64, 64).sum() == 0


def test_same_seed_same_masks_different_seed_differs():
    a = box_masks(32, 64, 64, torch.Generator().manual_seed(42))
    b = box_masks(32, 64, 64, torch.Generator().manual_seed(42))
    c = box_masks(32, 64, 64, torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert sum(not torch.equal(x, y) for x, y in zip(a, c)) > 28


def test_generator_state_save_restore_resumes_sequence():
    g = torch.Generator().manual_seed(7)
    box_masks(4, 32, 32, g)
    state = g.get_state().clone()
    cont = [box_masks(4, 32, 32, g) for _ in range(3)]
    g2 = torch.Generator()
    g2.set_state(state)
    assert all(torch.equal(box_masks(4, 32, 32, g2), c) for c in cont)
    assert not torch.equal(cont[0], cont[1])


def test_batch_prefix_property():
    big = box_masks(10, 24, 24, torch.Generator().manual_seed(9))
    small = box_masks(4, 24, 24, torch.Generator().manual_seed(9))
    assert torch.equal(big[:4], small)


def test_box_masks_device_argument():
    m = box_masks(3, 16, 16, torch.Generator().manual_seed(0), device="cpu")
    assert m.device.type == "cpu"
    meta = box_masks(3, 16, 16, torch.Generator().manual_seed(0), device="meta")
    assert meta.device.type == "meta" and meta.shape == (3, 1, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_box_masks_on_cuda_equal_cpu_masks():
    cpu = box_masks(64, 128, 96, torch.Generator().manual_seed(0))
    gpu = box_masks(64, 128, 96, torch.Generator().manual_seed(0), device="cuda")
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    gcuda = torch.Generator(device="cuda").manual_seed(0)
    m = box_masks(64, 128, 96, gcuda)
    assert m.device.type == "cuda" and set(torch.unique(m).tolist()) == {0.0, 1.0}
    h = half_masks(8, 16, 16, torch.Generator().manual_seed(0), device="cuda")
    assert torch.equal(h.cpu(), half_masks(8, 16, 16, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=-1, height=8, width=8), "n must"),
    (dict(n=2, height=0, width=8), "height"),
    (dict(n=2, height=8, width=8.0), "width"),
    (dict(n=2, height=8, width=8, prop_range=(0.6, 0.5)), "prop_range"),
    (dict(n=2, height=8, width=8, prop_range=(0.2, 1.5)), "prop_range"),
    (dict(n=2, height=8, width=8, prop_range=0.3), "prop_range"),
    (dict(n=2, height=8, width=8, n_boxes=0), "n_boxes"),
])
def test_box_masks_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        box_masks(**kwargs)


def test_boxes_from_uniforms_bad_shape():
    with pytest.raises(ValueError, match="uniforms"):
        boxes_from_uniforms(torch.rand(4, 3), 8, 8)
    with pytest.raises(ValueError, match="boxes"):
        masks_from_boxes(torch.zeros(4, 3), 8, 8)


def test_zero_area_proportion_gives_empty_boxes():
    u = torch.zeros(2, 3, 4, dtype=torch.float64)   # p = lo = 0, aspect u = 0 -> 0 * log(0) = nan in the raw formula
    boxes = boxes_from_uniforms(u, 16, 16, prop_range=(0.0, 0.5))
    assert (boxes[..., 2] == boxes[..., 0]).all() and (boxes[..., 3] == boxes[..., 1]).all()
    assert masks_from_boxes(boxes, 16, 16).sum() == 0


# ------------------------------------------------------------------------------------------------ half masks
def test_half_masks_are_the_four_halves():
    # odd sizes: both halves are floor(size / 2) wide, the middle row / column always comes from the first image
    m = half_masks(2000, 7, 5, torch.Generator().manual_seed(0))
    assert m.shape == (2000, 1, 7, 5) and m.dtype == torch.float32
    top = torch.zeros(7, 5); top[:3] = 1
    bottom = torch.zeros(7, 5); bottom[4:] = 1
    left = torch.zeros(7, 5); left[:, :2] = 1
    right = torch.zeros(7, 5); right[:, 3:] = 1
    counts = {name: sum(torch.equal(x[0], ref) for x in m) for name, ref in
              zip(HALF_SIDES, (top, bottom, left, right))}
    assert sum(counts.values()) == 2000
    assert all(420 < c < 580 for c in counts.values()), counts     # uniform over the 4 sides


def test_half_masks_reproducible():
    a = half_masks(16, 8, 8, torch.Generator().manual_seed(1))
    assert torch.equal(a, half_masks(16, 8, 8, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, half_masks(16, 8, 8, torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="height"):
        half_masks(2, -1, 8)


# ------------------------------------------------------------------------------------------------------- mix
def test_mix_images_and_logits():
    g = torch.Generator().manual_seed(0)
    m = box_masks(3, 16, 16, g)
    for channels in (3, 21):
        a, b = torch.randn(3, channels, 16, 16, generator=g), torch.randn(3, channels, 16, 16, generator=g)
        out = mix(a, b, m)
        sel = m.expand_as(a).bool()
        assert torch.equal(out[sel], b[sel]) and torch.equal(out[~sel], a[~sel])
        assert torch.equal(mix(a, b, torch.zeros_like(m)), a) and torch.equal(mix(a, b, torch.ones_like(m)), b)
        assert torch.equal(mix(a, b, m.expand_as(a)), out)


def test_mix_logits_then_argmax_equals_pasted_labels():
    g = torch.Generator().manual_seed(1)
    t0, t1 = torch.randn(2, 5, 12, 12, generator=g), torch.randn(2, 5, 12, 12, generator=g)
    m = box_masks(2, 12, 12, g)
    assert torch.equal(mix(t0, t1, m).argmax(1), mix(t0.argmax(1), t1.argmax(1), m))
    assert torch.equal(mix(t0.argmax(1), t1.argmax(1), m[:, 0]), mix(t0.argmax(1), t1.argmax(1), m))


def test_mix_keeps_half_precision_and_gradient():
    a = torch.randn(1, 3, 4, 4, dtype=torch.float16)
    b = torch.randn(1, 3, 4, 4, dtype=torch.float16)
    assert mix(a, b, torch.ones(1, 1, 4, 4)).dtype == torch.float16
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    mix(x, torch.zeros(1, 3, 4, 4), box_masks(1, 4, 4, torch.Generator().manual_seed(0))).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("first, second, mask", [
    (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9), torch.zeros(2, 1, 8, 8)),
    (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 4, 4)),
    (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(3, 1, 8, 8)),
    (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 8, 8)),
    (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8)),
    (torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(2, 1, 4, 4)),
    (torch.zeros(8, 8), torch.zeros(8, 8), torch.zeros(8, 8)),
])
def test_mix_shape_errors(first, second, mask):
    with pytest.raises(ValueError, match="mix"):
        mix(first, second, mask)


def test_mix_type_error():
    with pytest.raises(TypeError, match="mask"):
        mix(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), np.zeros((1, 1, 2, 2)))
