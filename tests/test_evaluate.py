"Tests of cps_repro.evaluate: confusion matrix / mIoU, overlap meter, whole and sliding-window inference, evaluate()."
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cps_repro.evaluate import (ConfusionMatrix, OverlapMeter, all_reduce_sum_, center_pad, cityscapes_palette,
                                default_stride, evaluate, predict, predict_whole, prediction_overlap,
                                save_predictions, sliding_window, voc_palette, window_starts, autocast_dtype)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------------
# helper models

class Ones(torch.nn.Module):
    "Outputs a single channel of ones: summed sliding-window logits become the window count. Counts its calls."
    def __init__(self): super().__init__(); self.calls = 0
    def forward(self, x): self.calls += 1; return x.new_ones(x.shape[0], 1, *x.shape[-2:])


class Recorder(torch.nn.Module):
    "Identity that remembers its inputs."
    def __init__(self): super().__init__(); self.inputs = []
    def forward(self, x): self.inputs.append(x.clone()); return x


class AddColumnRamp(torch.nn.Module):
    "Not mirror-symmetric: adds the column index."
    def forward(self, x): return x + torch.arange(x.shape[-1], dtype=x.dtype)


class Oracle(torch.nn.Module):
    "Predicts the class stored in channel 0 of the image, optionally mapping class `src` to `dst`."
    def __init__(self, num_classes, src=None, dst=None):
        super().__init__(); self.num_classes, self.src, self.dst = num_classes, src, dst
        self.seen_training = []
    def forward(self, x):
        self.seen_training.append(self.training)
        cls = x[:, 0].round().long().clamp(0, self.num_classes - 1)
        if self.src is not None: cls = torch.where(cls == self.src, self.dst, cls)
        return F.one_hot(cls, self.num_classes).permute(0, 3, 1, 2).float()


def pointwise(in_ch=3, num_classes=4, seed=0):
    "1x1 conv with small integer weights (exact float sums)."
    g = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(in_ch, num_classes, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-3, 4, conv.weight.shape, generator=g).float())
        conv.bias.copy_(torch.randint(-3, 4, conv.bias.shape, generator=g).float())
    return conv.eval()


def int_image(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, shape, generator=g).float()


def count_map(H, W, crop, stride):
    "Window count per pixel, computed independently of sliding_window from the window_starts grid (after padding)."
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    PH, PW = max(H, ch), max(W, cw)
    c = torch.zeros(PH, PW)
    for y in window_starts(PH, ch, sh):
        for x in window_starts(PW, cw, sw): c[y:y + ch, x:x + cw] += 1
    top, left = (PH - H) // 2, (PW - W) // 2
    return c[top:top + H, left:left + W]


# ----------------------------------------------------------------------------------------------------------------
# ConfusionMatrix

def test_confusion_matrix_hand_made_case():
    # 5 classes. labels / predictions, 12 pixels, two ignored (255).
    label = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 255, 255, 0, 1])
    pred = torch.tensor([0, 0, 1, 1, 3, 2, 2, 0, 4, 1, 0, 1])
    r = ConfusionMatrix(5).update(pred, label).compute()
    # class 0: TP 3 (px 0,1,10), FN 1 (px 2 -> 1), FP 1 (px 7: 2 -> 0)       -> 3/5
    # class 1: TP 2 (px 3,11), FN 1 (px 4 -> 3), FP 1 (px 2); px 9 is ignored -> 2/4
    # class 2: TP 2, FN 1 (px 7), FP 0                                        -> 2/3
    # class 3: TP 0, FP 1 (px 4), never labelled: predicted but absent        -> 0
    # class 4: only predicted on an ignored pixel -> absent from both: 0/0 = NaN, excluded from the mean
    expected = [3 / 5, 2 / 4, 2 / 3, 0.0]
    for c, e in enumerate(expected): assert math.isclose(r['iou'][c], 100 * e), (c, r['iou'])
    assert math.isnan(r['iou'][4])
    assert math.isclose(r['miou'], 100 * sum(expected) / 4)
    assert math.isclose(r['miou_no_bg'], 100 * sum(expected[1:]) / 3)
    assert r['n_pixels'] == 10
    assert math.isclose(r['pixel_acc'], 100 * 7 / 10)
    # recalls: class 0 3/4, class 1 2/3, class 2 2/3; classes 3 and 4 have no labelled pixel (NaN, excluded)
    assert math.isclose(r['mean_acc'], 100 * (3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert math.isnan(r['class_acc'][3]) and math.isnan(r['class_acc'][4])


def test_absent_class_nan_vs_predicted_class_zero():
    label = torch.tensor([[0, 0], [1, 1]])
    perfect = ConfusionMatrix(3).update(label.clone(), label).compute()
    assert perfect['miou'] == 100 and math.isnan(perfect['iou'][2])        # class 2 absent from both: not scored
    hallucinated = torch.tensor([[0, 2], [1, 1]])
    r = ConfusionMatrix(3).update(hallucinated, label).compute()
    assert r['iou'][2] == 0                                                 # predicted but absent: IoU 0, counts
    assert math.isclose(r['miou'], 100 * (1 / 2 + 1 + 0) / 3)


def test_matrix_layout_rows_truth_columns_prediction():
    cm = ConfusionMatrix(3).update(torch.tensor([2, 2, 1]), torch.tensor([0, 0, 1]))
    assert cm.matrix.tolist() == [[0, 0, 2], [0, 1, 0], [0, 0, 0]]
    assert cm.matrix.dtype == torch.int64


def test_update_accumulates_across_calls_and_batch_shapes():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 6, (4, 7, 9), generator=g); label[label == 5] = 255
    pred = torch.randint(0, 5, (4, 7, 9), generator=g)
    once = ConfusionMatrix(5).update(pred, label)
    pieces = ConfusionMatrix(5)
    for i in range(4): pieces.update(pred[i], label[i])
    assert torch.equal(once.matrix, pieces.matrix)
    flat = ConfusionMatrix(5).update(pred.flatten(), label.flatten().to(torch.uint8))
    assert torch.equal(flat.matrix, once.matrix)
    twice = ConfusionMatrix(5).update(pred, label).update(pred, label)
    assert torch.equal(twice.matrix, 2 * once.matrix)
    # brute force
    brute = torch.zeros(5, 5, dtype=torch.int64)
    for p, t in zip(pred.flatten().tolist(), label.flatten().tolist()):
        if t < 5: brute[t, p] += 1
    assert torch.equal(once.matrix, brute)


def test_labels_outside_classes_and_ignore_index_inside_classes():
    cm = ConfusionMatrix(3).update(torch.tensor([0, 1, 2, 1]), torch.tensor([0, 7, -1, 255]))
    assert cm.matrix.sum() == 1                                            # only 0 <= gt < C counts
    cm = ConfusionMatrix(3, ignore_index=0).update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))
    assert cm.matrix.tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_bad_inputs_raise_clear_errors():
    cm = ConfusionMatrix(4)
    with pytest.raises(ValueError, match='same shape'):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='argmax'):
        cm.update(torch.zeros(1, 4, 3, 3, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match='argmax'):
        cm.update(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match='integer tensor'):
        cm.update(torch.zeros(3, dtype=torch.long), [0, 1, 2])
    with pytest.raises(ValueError, match='num_classes=4'):
        cm.update(torch.tensor([0, 4]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r'\[0, 4\)'):
        cm.update(torch.tensor([-1, 0]), torch.tensor([0, 0]))
    assert cm.matrix.sum() == 0                                            # failed updates count nothing
    with pytest.raises(ValueError, match='num_classes'): ConfusionMatrix(0)


def test_reset_state_dict_and_all_reduce_without_distributed():
    cm = ConfusionMatrix(3).update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))
    before = cm.matrix.clone()
    assert torch.equal(cm.all_reduce().matrix, before)                    # no process group: no-op
    state = cm.state_dict()
    restored = ConfusionMatrix(3).load_state_dict(state)
    assert torch.equal(restored.matrix, before) and restored.compute() == cm.compute()
    with pytest.raises(ValueError, match='num_classes=3'): ConfusionMatrix(4).load_state_dict(state)
    with pytest.raises(KeyError, match='matrix'): ConfusionMatrix(3).load_state_dict({'num_classes': 3, 'ignore_index': 255})
    cm.reset()
    assert cm.matrix.sum() == 0 and math.isnan(cm.compute()['miou']) and math.isnan(cm.compute()['pixel_acc'])
    t = torch.tensor([3, 4]); assert all_reduce_sum_(t) is t and t.tolist() == [3, 4]


# ----------------------------------------------------------------------------------------------------------------
# OverlapMeter

def test_overlap_meter_excludes_background_and_ignore():
    target = torch.tensor([[0, 0, 255, 255], [1, 1, 2, 3]])
    p1 = torch.tensor([[0, 1, 2, 2], [1, 2, 2, 3]])
    p2 = torch.tensor([[1, 1, 0, 2], [1, 1, 2, 0]])
    # object pixels: (1,0) agree, (1,1) disagree, (1,2) agree, (1,3) disagree -> 2 / 4
    # background (0,0) disagrees, (0,1) agrees; ignored (0,2) disagrees, (0,3) agrees: none of them counts
    m = OverlapMeter().update(p1, p2, target)
    assert (m.agree, m.total) == (2, 4) and m.compute() == 0.5
    assert prediction_overlap(p1, p2, target) == 0.5
    m.update(p1, p1, target)                                               # accumulates: 4 more agreeing pixels
    assert (m.agree, m.total) == (6, 8)
    assert OverlapMeter(num_classes=3).update(p1, p2, target).total == 3  # label 3 is not a class of 3
    assert prediction_overlap(p1, p2, target, background_index=None) == 3 / 6
    assert math.isnan(OverlapMeter().update(p1[0], p2[0], target[0]).compute())
    with pytest.raises(ValueError, match='same shape'): OverlapMeter().update(p1, p2[0], target)
    restored = OverlapMeter().load_state_dict(m.state_dict())
    assert (restored.agree, restored.total) == (6, 8)
    assert m.reset().total == 0


# ----------------------------------------------------------------------------------------------------------------
# window grid, padding, sliding window, whole image

def test_window_starts_cityscapes_grid():
    assert default_stride(800) == 534 and default_stride(512) == 342
    rows, cols = window_starts(1024, 800, 534), window_starts(2048, 800, 534)
    assert rows == [0, 224] and cols == [0, 534, 1068, 1248]
    assert len(rows) * len(cols) == 8


@pytest.mark.parametrize('size,crop,stride', [(10, 3, 2), (11, 4, 3), (100, 30, 20), (7, 7, 5), (5, 8, 6), (9, 4, 4)])
def test_window_starts_cover_every_pixel_and_end_at_border(size, crop, stride):
    starts = window_starts(size, crop, stride)
    if size <= crop:
        assert starts == [0]; return
    assert starts[0] == 0 and starts[-1] == size - crop                   # last window aligned to the border
    assert len(starts) == math.ceil((size - crop) / stride) + 1            # the official window count
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts: covered[s:s + crop] = True
    assert covered.all()


def test_window_starts_rejects_gaps():
    with pytest.raises(ValueError, match='outside every window'): window_starts(10, 3, 5)
    with pytest.raises(ValueError, match='positive'): window_starts(10, 3, 0)


def test_sliding_window_cityscapes_window_count():
    ones = Ones()
    out = sliding_window(ones, torch.zeros(1, 3, 1024, 2048), 800, 534, window_batch=1)
    assert ones.calls == 8 and out.shape == (1, 1, 1024, 2048)
    ones.calls = 0
    assert torch.equal(sliding_window(ones, torch.zeros(1, 3, 1024, 2048), 800, 534, window_batch=3), out)
    assert ones.calls == 3                                               # 8 windows, 3 per forward pass
    assert torch.equal(out[0, 0], count_map(1024, 2048, 800, 534))
    # by hand: rows 0-799 / 224-1023, columns 0-799 / 534-1333 / 1068-1867 / 1248-2047
    assert out[0, 0, 0, 0] == 1 and out[0, 0, 500, 600] == 4 and out[0, 0, 500, 1300] == 6 and out[0, 0, 900, 1800] == 2


@pytest.mark.parametrize('shape,crop,stride', [((2, 3, 37, 53), 16, 11), ((1, 3, 40, 25), (16, 12), (9, 8)),
                                               ((1, 3, 9, 31), 16, 11), ((1, 3, 16, 16), 16, 11)])
def test_sliding_window_equals_whole_for_pointwise_model(shape, crop, stride):
    net, img = pointwise(), int_image(shape)
    with torch.no_grad(): whole = net(img)
    slid = sliding_window(net, img, crop, stride, num_classes=4)
    assert slid.shape == whole.shape
    # integer weights and inputs: every sum is exact, so the summed logits are whole * count exactly
    assert torch.equal(slid, whole * count_map(*shape[-2:], crop, stride))
    assert torch.equal(slid.argmax(1), whole.argmax(1))


@pytest.mark.parametrize('H,W', [(12, 40), (5, 7), (17, 3), (30, 30)])
def test_padding_is_cropped_away_without_shift(H, W):
    ramp = (torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W) + 1).expand(2, 3, H, W).contiguous()
    out = sliding_window(torch.nn.Identity(), ramp, 16, 11)
    assert out.shape == ramp.shape
    assert torch.equal(out, ramp * count_map(H, W, 16, 11))
    whole = predict_whole(torch.nn.Identity(), ramp, 48)
    assert whole.shape == ramp.shape and torch.equal(whole, ramp)


@pytest.mark.parametrize('H,W,crop,margins', [(5, 7, 8, (1, 2, 0, 1)), (4, 4, 8, (2, 2, 2, 2)),
                                              (8, 3, 8, (0, 0, 2, 3)), (3, 6, (9, 6), (3, 3, 0, 0))])
def test_predict_whole_pads_centred_with_zeros(H, W, crop, margins):
    top, bottom, left, right = margins
    rec = Recorder()
    img = torch.arange(1., H * W + 1).view(1, 1, H, W)
    out = predict_whole(rec, img, crop)
    assert len(rec.inputs) == 1
    seen = rec.inputs[0][0, 0]
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    assert seen.shape == (ch, cw)
    assert torch.equal(seen[top:ch - bottom, left:cw - right], img[0, 0])
    assert seen.sum() == img.sum()                                         # everything else is zero padding
    assert torch.equal(out, img)
    padded, offset = center_pad(img, crop)
    assert offset == (top, left) and torch.equal(padded[0, 0], seen)


def test_predict_whole_falls_back_to_sliding_for_large_images():
    ones = Ones()
    out = predict_whole(ones, torch.zeros(1, 3, 20, 9), 16, window_batch=1)   # taller than the crop
    assert ones.calls == 2 and torch.equal(out[0, 0], count_map(20, 9, 16, default_stride(16)))
    ones = Ones(); predict_whole(ones, torch.zeros(1, 3, 16, 16), 16)
    assert ones.calls == 1


# ----------------------------------------------------------------------------------------------------------------
# predict: flip, scales, errors

def test_flip_on_symmetric_and_asymmetric_models():
    img = int_image((1, 3, 10, 14), seed=3)
    net = pointwise()
    assert torch.equal(predict(net, img, flip=True), predict(net, img))    # mirror-symmetric model: unchanged
    asym = AddColumnRamp()
    expected = (asym(img) + asym(img.flip(-1)).flip(-1)) / 2
    got = predict(asym, img, flip=True)
    assert torch.equal(got, expected) and not torch.equal(got, asym(img))
    # flip is applied per window in sliding mode: each window sees the ramp from its own left border
    slid = predict(asym, img, mode='sliding', crop=(10, 8), stride=(10, 6), flip=True)
    expected = torch.zeros_like(img)
    for x in window_starts(14, 8, 6):
        w = img[..., x:x + 8]
        expected[..., x:x + 8] += (asym(w) + asym(w.flip(-1)).flip(-1)) / 2
    assert torch.equal(slid, expected)


def test_multi_scale_sums_resized_logits():
    img = int_image((1, 3, 12, 16), seed=4)
    net = pointwise()
    rs = lambda t, size: F.interpolate(t, size=size, mode='bilinear', align_corners=True)
    with torch.no_grad():
        expected = net(img) + rs(net(rs(img, (6, 8))), (12, 16)) + rs(net(rs(img, (18, 24))), (12, 16))
    got = predict(net, img, scales=(1.0, 0.5, 1.5))
    assert got.shape == (1, 4, 12, 16) and torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, 3 * predict(net, img), atol=1e-2)     # the scales really differ
    assert predict(net, img, mode='sliding', crop=8, scales=(0.75, 1.25)).shape == (1, 4, 12, 16)


def test_predict_returns_inference_tensors_and_keeps_model_mode():
    net = pointwise().train()
    out = predict(net, int_image((1, 3, 5, 5)))
    assert not out.requires_grad and net.training                         # caller decides the mode


def test_predict_bad_inputs():
    net, img = pointwise(), int_image((1, 3, 6, 6))
    with pytest.raises(ValueError, match="'whole', 'sliding'"): predict(net, img, mode='slide')
    with pytest.raises(ValueError, match='needs a crop'): predict(net, img, mode='sliding')
    with pytest.raises(ValueError, match='image\\[None\\]'): predict(net, img[0])
    with pytest.raises(ValueError, match='float tensor'): predict(net, img.long())
    with pytest.raises(ValueError, match='scales'): predict(net, img, scales=(1.0, 0))
    with pytest.raises(ValueError, match='scales'): predict(net, img, scales=())
    with pytest.raises(ValueError, match='num_classes=21'): predict(net, img, num_classes=21)
    with pytest.raises(ValueError, match='spatial size'): predict(lambda x: x[..., ::2, ::2], img)
    with pytest.raises(TypeError, match='dicts/tuples'): predict(lambda x: {'out': x}, img)
    with pytest.raises(ValueError, match='positive'): predict(net, img, mode='sliding', crop=0)


# ----------------------------------------------------------------------------------------------------------------
# evaluate

LABELS = [torch.tensor([[0, 1, 1], [2, 255, 0]]), torch.tensor([[1, 1, 2, 2, 0], [3, 3, 0, 255, 255]]),
          torch.tensor([[0, 255], [1, 0], [3, 0]])]


def as_batch(label, k):
    image = torch.where(label == 255, 0, label).float()[None, None].expand(1, 3, *label.shape).clone()
    return {'image': image, 'label': label[None], 'id': [f'img{k}']}


def loader_of(labels=LABELS):
    return [as_batch(lab, k) for k, lab in enumerate(labels)]


def expected_scores(pred_fn, labels=LABELS, C=4):
    "mIoU and overlap computed independently, pixel by pixel in Python."
    tp, fp, fn = [0] * C, [0] * C, [0] * C
    for lab in labels:
        for t in lab.flatten().tolist():
            if t >= C: continue
            p = pred_fn(t)
            if p == t: tp[t] += 1
            else: fp[p] += 1; fn[t] += 1
    ious = [tp[c] / (tp[c] + fp[c] + fn[c]) for c in range(C) if tp[c] + fp[c] + fn[c]]
    return 100 * sum(ious) / len(ious)


def test_evaluate_oracle_second_model_and_overlap():
    m1, m2 = Oracle(4).train(), Oracle(4, src=1, dst=2).train()
    r = evaluate(m1, loader_of(), 4, crop=4, progress=False, second_model=m2)
    assert r['miou'] == 100 and r['pixel_acc'] == 100 and r['n_images'] == 3
    assert math.isclose(r['miou_2'], expected_scores(lambda t: 2 if t == 1 else t))
    assert r['iou_2'][1] == 0
    # object pixels: class 1: 5, class 2: 3, class 3: 3 -> 11; the networks disagree on the 5 class-1 pixels
    assert math.isclose(r['overlap'], 6 / 11)
    assert m1.training and m2.training                                    # modes restored
    assert set(m1.seen_training) == {False} and set(m2.seen_training) == {False}   # ran in eval mode
    assert r['mode'] == 'whole' and r['crop'] == 4 and r['stride'] is None and r['scales'] == [1.0]


def test_evaluate_sliding_and_wrong_model():
    wrong = Oracle(4, src=3, dst=0)
    r = evaluate(wrong, loader_of(), 4, mode='sliding', crop=2, progress=False)
    assert math.isclose(r['miou'], expected_scores(lambda t: 0 if t == 3 else t))
    assert r['stride'] == default_stride(2) == 2 and r['iou'][3] == 0       # labelled, never predicted
    assert 'miou_2' not in r and 'overlap' not in r


def test_evaluate_saves_palette_pngs(tmp_path):
    from PIL import Image
    evaluate(Oracle(4), loader_of(), 4, crop=8, progress=False, save_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ['img0.png', 'img1.png', 'img2.png']
    back = np.array(Image.open(tmp_path / 'img1.png'))
    assert back.tolist() == [[1, 1, 2, 2, 0], [3, 3, 0, 0, 0]]


def test_evaluate_bad_batches():
    with pytest.raises(KeyError, match="'image'"): evaluate(Oracle(4), [{'img': 0}], 4, progress=False)
    bad = as_batch(LABELS[0], 0); bad['label'] = bad['label'][:, :1]
    with pytest.raises(ValueError, match='img0'): evaluate(Oracle(4), [bad], 4, progress=False)
    with pytest.raises(ValueError, match='mode'): evaluate(Oracle(4), loader_of(), 4, mode='tiles', progress=False)


# ----------------------------------------------------------------------------------------------------------------
# palettes and PNGs

def test_palettes_and_save_predictions(tmp_path):
    from PIL import Image
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert pal[15].tolist() == [192, 128, 128] and pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256
    cp = cityscapes_palette()
    assert cp[0].tolist() == [128, 64, 128] and cp[18].tolist() == [119, 11, 32] and cp[19].tolist() == [0, 0, 0]
    maps = torch.tensor([[0, 5], [255, 18]])
    (path,) = save_predictions(maps, ['/images/val/aachen_000000_000019.png'], tmp_path, cityscapes_palette())
    assert path.name == 'aachen_000000_000019.png'
    im = Image.open(path)
    assert im.mode == 'P' and np.array(im).tolist() == [[0, 5], [255, 18]]
    assert im.getpalette()[18 * 3:19 * 3] == [119, 11, 32]
    with pytest.raises(ValueError, match='255'): save_predictions(torch.tensor([[256]]), ['x'], tmp_path)
    with pytest.raises(ValueError, match='ids'): save_predictions(torch.zeros(2, 2, 2, dtype=torch.long), ['x'], tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# distributed (gloo, 2 CPU processes)

class OracleWithBuffers(Oracle):
    "An Oracle with a parameter and BatchNorm buffers, so that DDP accepts it and would broadcast buffers."
    def __init__(self, num_classes):
        super().__init__(num_classes); self.bn = torch.nn.BatchNorm2d(3); self.w = torch.nn.Parameter(torch.ones(1))


def _ddp_worker(rank, world, init_file, expected):
    import torch.distributed as dist
    torch.set_num_threads(1)
    from datetime import timedelta
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    try:
        label = torch.tensor([[0, 1], [1, 255]]) if rank == 0 else torch.tensor([[2, 2], [0, 1]])
        pred = torch.tensor([[0, 1], [2, 0]]) if rank == 0 else torch.tensor([[2, 1], [0, 1]])
        cm = ConfusionMatrix(3).update(pred, label).all_reduce()
        assert cm.matrix.tolist() == expected['matrix'], cm.matrix.tolist()
        m = OverlapMeter().update(pred, torch.ones_like(pred), label).all_reduce()
        assert (m.agree, m.total) == tuple(expected['overlap'])
        shard = [b for k, b in enumerate(loader_of()) if k % world == rank]   # unequal shares: 2 and 1 images
        r = evaluate(Oracle(4), shard, 4, crop=4, progress=False, second_model=Oracle(4, src=1, dst=2))
        for key in ('miou', 'miou_2', 'overlap', 'n_images', 'pixel_acc'):
            assert math.isclose(r[key], expected['eval'][key]), (key, r[key], expected['eval'][key])
        # a DDP-wrapped model (with parameters and buffers) is evaluated as its bare module, shares of unequal size
        wrapped = torch.nn.parallel.DistributedDataParallel(OracleWithBuffers(4)).train()
        r = evaluate(wrapped, shard, 4, crop=4, progress=False)
        assert math.isclose(r['miou'], 100) and r['n_images'] == 3 and wrapped.training and wrapped.module.training
    finally:
        dist.destroy_process_group()


def test_all_reduce_and_evaluate_under_ddp(tmp_path):
    import torch.multiprocessing as mp
    both_label = torch.tensor([0, 1, 1, 255, 2, 2, 0, 1])
    both_pred = torch.tensor([0, 1, 2, 0, 2, 1, 0, 1])
    full = ConfusionMatrix(3).update(both_pred, both_label)
    ov = OverlapMeter().update(both_pred, torch.ones_like(both_pred), both_label)
    single = evaluate(Oracle(4), loader_of(), 4, crop=4, progress=False, second_model=Oracle(4, src=1, dst=2))
    expected = dict(matrix=full.matrix.tolist(), overlap=[ov.agree, ov.total],
                    eval={k: single[k] for k in ('miou', 'miou_2', 'overlap', 'n_images', 'pixel_acc')})
    assert expected['overlap'] == [3, 5]
    # fork (where available) reuses the imported torch: far cheaper than spawning fresh interpreters; no CUDA is used
    method = 'fork' if 'fork' in torch.multiprocessing.get_all_start_methods() else 'spawn'
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / 'pg'), expected), nprocs=2, join=True, start_method=method)


# ----------------------------------------------------------------------------------------------------------------
# GPU (skipped without CUDA)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 20, (2, 64, 80), generator=g); label[label == 19] = 255
    pred = torch.randint(0, 19, (2, 64, 80), generator=g)
    cpu = ConfusionMatrix(19).update(pred, label)
    gpu = ConfusionMatrix(19).update(pred.cuda(), label.cuda())
    assert gpu.matrix.device.type == 'cuda' and torch.equal(gpu.matrix.cpu(), cpu.matrix)
    net = pointwise(num_classes=19)
    img = int_image((1, 3, 70, 90))
    a = predict(net, img, mode='sliding', crop=32)
    b = predict(net.cuda(), img.cuda(), mode='sliding', crop=32).cpu()
    assert torch.equal(a.argmax(1), b.argmax(1))
    r_cpu = evaluate(Oracle(4), loader_of(), 4, crop=4, progress=False, second_model=Oracle(4, src=1, dst=2))
    r_gpu = evaluate(Oracle(4), loader_of(), 4, crop=4, progress=False, second_model=Oracle(4, src=1, dst=2),
                     device='cuda')
    for k in ('miou', 'miou_2', 'overlap', 'n_images'): assert math.isclose(r_cpu[k], r_gpu[k])


# ----------------------------------------------------------------------------------------------------------------
# batched windows and autocast (issue 15 item 2)

def _deeplab(seed=0):
    from cps_repro.models import deeplabv3plus
    torch.manual_seed(seed)
    return deeplabv3plus('small_resnet', 4, output_stride=8, generator=torch.Generator().manual_seed(seed)).eval()


@pytest.mark.parametrize('window_batch', [2, 3, 16])
def test_batched_windows_match_one_by_one_on_a_real_network(window_batch):
    net = _deeplab()
    img = torch.randn(2, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    ref = predict(net, img, mode='sliding', crop=32, stride=21, flip=True, num_classes=4, window_batch=1)
    got = predict(net, img, mode='sliding', crop=32, stride=21, flip=True, num_classes=4, window_batch=window_batch)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), ref.argmax(1))


def test_evaluate_with_autocast_and_window_batch():
    net = _deeplab()
    g = torch.Generator().manual_seed(2)
    loader = [{'image': torch.randn(1, 3, 40, 50, generator=g), 'label': torch.randint(0, 4, (1, 40, 50), generator=g),
               'id': [f'i{k}']} for k in range(2)]
    fp32 = evaluate(net, loader, 4, mode='sliding', crop=32, progress=False, window_batch=1)
    batched = evaluate(net, loader, 4, mode='sliding', crop=32, progress=False, window_batch=4)
    assert fp32['amp'] is None and batched['miou'] == pytest.approx(fp32['miou'], abs=1e-9)
    bf16 = evaluate(net, loader, 4, mode='sliding', crop=32, progress=False, amp='bf16')
    assert bf16['amp'] == 'bfloat16' and 0 <= bf16['miou'] <= 100
    with torch.inference_mode():
        a = predict(net, loader[0]['image'], 'whole', crop=64, amp=torch.bfloat16)
        b = predict(net, loader[0]['image'], 'whole', crop=64)
    assert a.dtype == torch.float32 and (a.argmax(1) == b.argmax(1)).float().mean() > 0.9
    assert autocast_dtype(None) is None and autocast_dtype('none') is None and autocast_dtype('fp16') == torch.float16
    with pytest.raises(ValueError, match='amp'): autocast_dtype('int8')
    with pytest.raises(ValueError, match='window_batch'): sliding_window(net, loader[0]['image'], 32, window_batch=0)
