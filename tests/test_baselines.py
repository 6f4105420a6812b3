"The CCT and GCT baselines: abCE, the CCT perturbations, GCT's flaw detector and targets, and both methods in the trainer."
import json, math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from cps_repro.methods.cct import (
    CCTParams, PERTURBATIONS, log_rampup, abce_threshold,
    abce_keep_mask, abce_loss, spatial_dropout, feature_noise, feature_drop, connected_components, object_boxes,
    Guide, context_masking, object_masking, cutout_mask, guided_cutout, AuxDecoder, CCTNet, cct_losses,
    perturbation_generator)
from cps_repro.methods.gct import (
    GCTParams, FD_MIN_SIZE, FlawDetector, IBNorm, odd_kernel_size, gaussian_kernel1d, gaussian_blur, handle_flawmap,
    dc_targets, flaw_ground_truth, frozen, gct_rampup_iters, gct_losses, gct_after_step, gct_extra_optimizers,
    build_gct)
from cps_repro.methods import StepContext, get_method, paper_rows
from cps_repro.overrides import apply_overrides
from cps_repro.presets import preset
from cps_repro.models import deeplabv3plus, count_parameters
from cps_repro.synthetic import synthesize
from cps_repro.train import Trainer, prepare_run_dir

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth') / 'voc'
    synthesize(root, layout='voc', n=64, n_val=8, seed=0, size=32, progress=False)
    return root


def tiny(data_root, method, **kw):
    over = {'data_root': str(data_root), 'iters': 4, 'batch_size': 2, 'eval_every': 2, 'checkpoint_every': 2,
            'log_every': 1, 'workers': 0, **kw}
    return apply_overrides(preset(f'mini_{method}', '1_4'), over)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- the methods in the trainer ------------------------------------------------------------------------------

def test_the_trainer_finds_both_baselines_by_name():
    cct, gct = get_method('cct'), get_method('gct')
    assert (len(cct.nets), cct.trained, cct.unlabeled_streams) == (1, (0,), 1)
    assert (len(gct.nets), gct.trained, gct.unlabeled_streams) == (3, (0, 1), 1)
    assert gct.after_step is not None and gct.extra_optimizers is not None and cct.after_step is None
    assert (paper_rows()['cct'], paper_rows()['gct']) == ('CCT', 'GCT')   # their results land in the paper's rows


@pytest.mark.parametrize('method', ['cct', 'gct'])
def test_train_resume_is_bit_identical_and_writes_a_valid_result(data_root, tmp_path, method):
    full = Trainer(tiny(data_root, method), run_dir=tmp_path / 'full', progress=False)
    r = full.fit()
    saved = json.loads((tmp_path / 'full' / 'result.json').read_text())
    assert saved == r and 'NaN' not in (tmp_path / 'full' / 'result.json').read_text()
    assert (r['method'], r['iters'], r['dataset'], r['split']) == (method, 4, 'voc', '1_4')
    assert 0 <= r['miou'] <= 100 and len(r['per_class_iou']) == 5 and r['n_unlabeled'] == 48
    assert (r['miou_net2'] is not None) == (method == 'gct')           # GCT: network 2 and the overlap too
    rows = [json.loads(l) for l in (tmp_path / 'full' / 'metrics.jsonl').read_text().splitlines()]
    names = {'cct': {'loss/sup', 'loss/unsup'},
             'gct': {'loss/sup1', 'loss/fc1', 'loss/dc1', 'loss/sup2', 'loss/fc2', 'loss/dc2'}}[method]
    assert names <= set(next(row for row in rows if 'loss/total' in row))

    half = Trainer(tiny(data_root, method), run_dir=tmp_path / 'half', progress=False)
    prepare_run_dir(half.run_dir, half.cfg)
    for _ in range(2): half.step()
    half.save_checkpoint(); del half
    resumed = Trainer(tiny(data_root, method), run_dir=tmp_path / 'half', progress=False)
    rr = resumed.fit()
    assert resumed.it == 4 and rr['miou'] == r['miou'] and rr['per_class_iou'] == r['per_class_iou']
    for n1, n2 in zip(full.nets, resumed.nets):
        s1, s2 = n1.state_dict(), n2.state_dict()
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    for o1, o2 in zip(full.opts, resumed.opts):
        assert all(torch.equal(a['momentum_buffer'], b['momentum_buffer'])
                   for a, b in zip(o1.state_dict()['state'].values(), o2.state_dict()['state'].values()))
    if method == 'gct':
        a, b = (t.extra_opts['flaw_detector'][0].state_dict()['state'] for t in (full, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[i][k], b[i][k]) for i in a for k in ('exp_avg', 'exp_avg_sq'))


# ---- abCE ------------------------------------------------------------------------------------------------------

def test_abce_threshold_follows_the_official_log_rampup():
    start, end = 1 / 21, 0.99
    expect = lambda t, L: start + (end - start) * (1 - math.exp(-5 * min(t, L) / L))
    # 0-based iteration it evaluates the ramp at it + 1 (the official 1-based counter); L = 0.4 · 1000 = 400
    for it in (0, 1, 99, 250, 398, 399, 400, 999):
        assert abce_threshold(it, 1000, 21) == pytest.approx(expect(it + 1, 400), abs=1e-12)
    assert abce_threshold(0, 1000, 21) == pytest.approx(0.04762 + 0.94238 * (1 - math.exp(-5 / 400)), abs=1e-4)
    assert abce_threshold(399, 1000, 21) == abce_threshold(5000, 1000, 21) < 0.99    # flat after 40 %, below 0.99
    assert abce_threshold(9, 100, 5, rampup=0.1, end=0.5) == pytest.approx(0.2 + 0.3 * (1 - math.exp(-5)))
    assert abce_threshold(0, 100, 5, rampup=0.0) == 0.99
    assert log_rampup(-3, 10) == 0.0 and log_rampup(5, 0) == 1.0
    with pytest.raises(ValueError, match='num_classes'): abce_threshold(0, 10, 1)


def _logits_with_true_prob(p_true):
    "Two-class logits whose class-1 probability is `p_true` [B, H, W]."
    l1 = torch.log(p_true / (1 - p_true))
    return torch.stack([torch.zeros_like(l1), l1], 1)


def test_abce_keeps_the_hard_labeled_pixels():
    p = torch.tensor([[[0.1, 0.3, 0.5], [0.7, 0.9, 0.5]]])
    target = torch.tensor([[[1, 1, 1], [1, 1, 255]]])
    logits = _logits_with_true_prob(p)
    assert abce_keep_mask(logits, target, 0.6).tolist() == [[[True, True, True], [False, False, False]]]
    assert abce_keep_mask(logits, target, 0.5).tolist() == [[[True, True, False], [False, False, False]]]   # strict <
    # below every probability: min_kept = 1 per image raises the threshold to the 2nd smallest (0.3): only 0.1 kept
    assert abce_keep_mask(logits, target, 0.01).tolist() == [[[True, False, False], [False, False, False]]]
    assert abce_keep_mask(logits, target, 0.01, min_kept=2).sum() == 2
    assert abce_keep_mask(logits, target, 0.01, min_kept=0).sum() == 0
    # the loss is the mean CE of the kept pixels, and only they get a gradient
    logits.requires_grad_(True)
    loss = abce_loss(logits, target, 0.6)
    assert loss.item() == pytest.approx(float(-torch.log(torch.tensor([0.1, 0.3, 0.5])).mean()), abs=1e-5)
    loss.backward()
    assert (logits.grad[0, :, 0] != 0).all() and (logits.grad[0, :, 1] == 0).all()
    nothing = abce_loss(logits, torch.full_like(target, 255), 0.6)
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_abce_bad_input_is_a_clear_error():
    logits = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match='outside'): abce_keep_mask(logits, torch.full((1, 2, 2), 2), 0.5)
    with pytest.raises(ValueError, match='target shape'): abce_keep_mask(logits, torch.zeros(1, 3, 3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match='min_kept'): abce_keep_mask(logits, torch.zeros(1, 2, 2, dtype=torch.long), 0.5, min_kept=-1)


# ---- CCT perturbations -------------------------------------------------------------------------------------------

def _features():
    return torch.arange(1., 1 + 2 * 6 * 8 * 8).view(2, 6, 8, 8)


def _guide():
    logits = torch.zeros(2, 3, 32, 32)
    logits[:, 1, 2:22, 4:24] = 5           # a 20x20 object in both images
    logits[1, 2, 26:31, 0:9] = 5           # and a small one in the second
    return Guide(logits)


@pytest.mark.parametrize('kind', PERTURBATIONS)
def test_each_perturbation_keeps_the_shape_and_is_reproducible(kind):
    dec = AuxDecoder(kind, 6, 3)
    f, guide = _features(), _guide()
    out = dec.perturb(f, guide, gen(0))
    assert out.shape == f.shape and out.dtype == f.dtype and not torch.equal(out, f)
    assert torch.equal(out, dec.perturb(f, guide, gen(0)))
    if kind in ('dropout', 'cutout', 'feature_noise'):      # random: another seed gives another perturbation
        assert any(not torch.equal(out, dec.perturb(f, guide, gen(s))) for s in range(1, 6))
    assert dec(f, guide, gen(0)).shape == (2, 3, 8, 8)


def test_unknown_perturbation_is_refused():
    with pytest.raises(ValueError, match='feature_noise'): AuxDecoder('vat', 4, 2)


def test_spatial_dropout_zeroes_whole_channels_and_rescales():
    f = _features()
    ratio = (spatial_dropout(f, 0.5, gen(3)) / f).flatten(2)
    assert set(ratio.unique().tolist()) == {0.0, 2.0} and (ratio == ratio[..., :1]).all()
    kept = torch.stack([(spatial_dropout(f, 0.5, gen(s)) != 0).flatten(2)[..., 0] for s in range(200)]).float().mean()
    assert 0.4 < kept < 0.6
    assert torch.equal(spatial_dropout(f, 0.0, gen()), f)
    with pytest.raises(ValueError, match='p=1'): spatial_dropout(f, 1.0)


def test_feature_noise_is_multiplicative_uniform_and_shared_by_the_batch():
    f = _features()
    rel = feature_noise(f, 0.3, gen(1)) / f - 1
    assert rel.abs().max() <= 0.3 + 1e-6 and rel.abs().max() > 0.25 and torch.allclose(rel[0], rel[1])
    assert rel[0].std() > 0.1                                  # different noise at each channel and position


def test_feature_drop_zeroes_the_most_activated_region():
    att = torch.tensor([1.0, 0.95, 0.8, 0.5, 0.0])
    f = att.view(1, 1, 1, 5).expand(2, 4, 3, 5).clone()
    f[1] *= 2                                                   # the threshold is relative to each image's maximum
    outs = torch.stack([feature_drop(f, (0.7, 0.9), gen(s)) for s in range(40)])
    col = lambda j: outs[:, :, :, :, j]
    assert (col(0) == 0).all() and (col(1) == 0).all()            # >= 0.9 · max: always dropped
    assert (col(3) == f[:, :, :, 3]).all() and (col(4) == 0).all()  # 0.5 · max: always kept (0 stays 0)
    dropped_08 = (col(2)[:, 0, 0, 0] == 0)
    assert dropped_08.any() and (~dropped_08).any()               # 0.8 · max: depends on γ ~ U(0.7, 0.9)
    assert torch.equal(dropped_08, col(2)[:, 1, 0, 0] == 0)       # one γ for the whole batch
    with pytest.raises(ValueError, match='drop_range'): feature_drop(f, (0.9, 0.7))


def test_context_and_object_masking_use_the_main_prediction_nearest_resized():
    logits = torch.zeros(1, 3, 16, 16); logits[0, 2, :, :8] = 5   # an object (class 2) on the left half
    guide, f = Guide(logits), torch.ones(1, 2, 4, 4)
    ctx, obj = context_masking(f, guide), object_masking(f, guide)
    assert ctx[..., :2].eq(1).all() and ctx[..., 2:].eq(0).all()   # context masking zeroes the context
    assert obj[..., :2].eq(0).all() and obj[..., 2:].eq(1).all()   # object masking zeroes the object
    assert torch.equal(ctx + obj, f)
    background = Guide(torch.zeros(1, 3, 16, 16))                   # nothing predicted: argmax 0 everywhere
    assert context_masking(f, background).eq(0).all() and torch.equal(object_masking(f, background), f)


def test_connected_components_use_8_connectivity_and_unique_labels():
    m = torch.zeros(2, 6, 6, dtype=torch.bool)
    m[0, 0, 0] = m[0, 1, 1] = True                 # diagonal neighbours: one component
    m[0, 4:6, 4:6] = True
    m[1, 0, 0] = True                              # same place, other image: another component
    lab = connected_components(m)
    assert lab[0, 0, 0] == lab[0, 1, 1] != lab[0, 4, 4] and (lab[~m] == 0).all()
    assert len(lab[m].unique()) == 3
    snake = torch.zeros(1, 17, 17, dtype=torch.bool)  # a serpentine needs many more than 8 propagation rounds
    snake[0, 0:15:2, :15] = True
    for r in range(1, 15, 2): snake[0, r, 14 if r % 4 == 1 else 0] = True
    snake[0, 16, 16] = True                            # plus an isolated pixel
    labels = connected_components(snake)
    assert len(labels[snake].unique()) == 2 and labels[0, 0, 0] == labels[0, 14, 14] != labels[0, 16, 16]
    with pytest.raises(ValueError, match=r'\[B, H, W\]'): connected_components(torch.zeros(4, 4, dtype=torch.bool))


def test_object_boxes_give_bounding_boxes_and_boundary_counts():
    m = torch.zeros(1, 32, 32, dtype=torch.bool)
    m[0, 2:22, 4:24] = True; m[0, 26:30, 26:30] = True
    b = object_boxes(m)
    order = b.boundary.argsort()
    assert b.boundary[order].tolist() == [12, 76]
    assert [t[order].tolist() for t in (b.top, b.bottom, b.left, b.right)] == [[26, 2], [29, 21], [26, 4], [29, 23]]
    empty = object_boxes(torch.zeros(1, 4, 4, dtype=torch.bool))
    assert all(t.numel() == 0 for t in empty)


def test_guided_cutout_cuts_one_box_inside_each_large_object():
    guide = _guide()
    assert len(guide.boxes.image) == 2                     # the 20x20 objects; the 5x9 one (24 boundary px) is skipped
    for seed in range(10):
        mask = cutout_mask(guide, 0.4, gen(seed))
        for img in range(2):
            hole = (mask[img, 0] == 0).nonzero()
            (r0, c0), (r1, c1) = hole.min(0).values.tolist(), hole.max(0).values.tolist()
            assert (r1 - r0 + 1, c1 - c0 + 1, len(hole)) == (7, 7, 49)   # int(0.4 · 19) = 7
            assert 2 <= r0 <= 13 and 4 <= c0 <= 15                       # start + [0, int(0.6 · 19) = 11]
        assert (mask[1, 0, 26:31, 0:9] == 1).all()
    f = torch.ones(2, 3, 8, 8)
    cut = guided_cutout(f, guide, 0.4, gen(0))
    assert torch.equal(cut, f * F.interpolate(cutout_mask(guide, 0.4, gen(0)), size=(8, 8), mode='nearest'))
    assert torch.equal(cutout_mask(Guide(torch.zeros(1, 2, 8, 8)), 0.4, gen()), torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match='erase'): cutout_mask(guide, 1.5)


# ---- CCT network and loss ------------------------------------------------------------------------------------------

def _cct_net(aux_per_type=2):
    seg = deeplabv3plus('small_resnet', 5, output_stride=4, generator=gen(0))
    return CCTNet(seg, aux_per_type=aux_per_type, generator=gen(1)).train(), seg


def test_cct_net_forward_is_the_plain_network_and_adds_twelve_classifiers():
    net, _ = _cct_net()
    _, seg = _cct_net()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): assert torch.allclose(net(x), seg.train()(x), atol=1e-6)
    assert [d.kind for d in net.aux_decoders] == [k for k in PERTURBATIONS for _ in range(2)]
    assert count_parameters(net) - count_parameters(seg) == 12 * (32 * 5 + 5)
    main, aux = net.forward_aux(x, gen(0))
    assert not main.requires_grad and len(aux) == 12 and all(a.shape == (2, 5, 32, 32) and a.requires_grad for a in aux)
    assert len(_cct_net(aux_per_type=1)[0].aux_decoders) == 6


def test_cct_loss_trains_encoder_and_aux_decoders_but_not_the_main_classifier_on_unlabeled():
    net, _ = _cct_net()
    cfg = preset('mini_cct', '1_4')
    g = gen(3)    # fixed inputs: on a rare random draw (about 1 in 200) the untrained network predicts objects almost
                  # everywhere, the object-masking decoders then see all-zero features and, rightly, get no gradient
    xl, y, xu = torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 5, (2, 32, 32), generator=g), torch.randn(2, 3, 32, 32, generator=g)
    ctx = StepContext([net], cfg, 0, gen(5))
    terms = cct_losses(ctx, {'labeled': {'image': xl, 'label': y}, 'unlabeled': {'image': xu}})
    assert set(terms) == {'sup', 'unsup'} and terms['sup'][1] == 1.0 and terms['unsup'][1] == 30.0
    terms['unsup'][0].backward()
    assert net.head.classifier.weight.grad is None
    assert all(d.classifier.weight.grad.abs().sum() > 0 for d in net.aux_decoders)
    assert net.backbone.conv1[0].weight.grad.abs().sum() > 0
    # the unsupervised loss is the mean over decoders of MSE(softmax(aux), softmax(main))
    with torch.no_grad():
        main, aux = net.forward_aux(xu, perturbation_generator(StepContext([net], cfg, 0, gen(5)), 'cpu'))
        expect = torch.stack([F.mse_loss(a.softmax(1), main.softmax(1)) for a in aux]).mean()
    assert torch.allclose(terms['unsup'][0], expect, atol=1e-7)


def test_cct_perturbation_seeds_come_from_the_trainer_generator():
    cfg = preset('mini_cct', '1_4')
    g = gen(11)
    a = perturbation_generator(StepContext([], cfg, 0, g), 'cpu').initial_seed()
    b = perturbation_generator(StepContext([], cfg, 0, g), 'cpu').initial_seed()
    assert a != b                                                             # each call (micro-batch) its own seed
    assert perturbation_generator(StepContext([], cfg, 0, gen(11)), 'cpu').initial_seed() == a   # restorable
    no_trainer = perturbation_generator(StepContext([], cfg, 3, None), 'cpu').initial_seed()
    assert no_trainer == perturbation_generator(StepContext([], cfg, 3, None), 'cpu').initial_seed()
    assert no_trainer != perturbation_generator(StepContext([], cfg, 4, None), 'cpu').initial_seed()


def test_hparams_are_the_official_values_and_validated():
    assert preset('voc_cct', '1_8').hparams == CCTParams() and CCTParams().weight == 30
    assert preset('voc_gct', '1_8').hparams == GCTParams() and GCTParams().dc_weight == 100
    from cps_repro.config import method_params
    with pytest.raises(KeyError, match='weight'): method_params('cct', wieght=1)
    with pytest.raises(ValueError, match='hparams.dc_threshold'):
        apply_overrides(preset('voc_gct', '1_8'), {'hparams.dc_threshold': 2.0})


# ---- GCT ------------------------------------------------------------------------------------------------------------

def test_flaw_detector_architecture_and_input_checks():
    fd = FlawDetector(3 + 21, generator=gen(0)).train()
    assert [c.out_channels for c in fd.convs] == [64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in fd.convs] == [2, 2, 1, 2, 1, 2, 1] and fd.classifier.kernel_size == (4, 4)
    assert fd(torch.randn(2, 24, 128, 128)).shape == (2, 1, 128, 128)
    small = FlawDetector(8, 8, gen(0)).train()
    out = small(torch.randn(2, 8, 32, 32))
    assert out.shape == (2, 1, 32, 32) and out[0].std() > 0 and FD_MIN_SIZE == 128
    with pytest.raises(ValueError, match=r'\[B, 24, H, W\]'): fd(torch.randn(2, 8, 128, 128))
    ib = IBNorm(6)
    y = ib(torch.randn(4, 6, 5, 5) * 3 + 1)
    assert ib.n_bn == 3 and torch.allclose(y[:, 3:].mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-5)
    assert torch.equal(FlawDetector(8, 8, gen(0)).convs[0].weight, small.convs[0].weight)
    bound = 1 / math.sqrt(8 * 16)
    assert small.convs[0].weight.abs().max() <= bound and small.convs[0].bias.abs().max() <= bound


def test_gaussian_kernel_matches_scipy():
    scipy_ndimage = pytest.importorskip('scipy.ndimage')
    for k in (3, 5, 9, 17, 33, 65, 129):
        delta = torch.zeros(k, k, dtype=torch.float64); delta[k // 2, k // 2] = 1
        ref = scipy_ndimage.gaussian_filter(delta.numpy(), 0.3 * ((k - 1) * 0.5 - 1) + 0.8)
        assert torch.allclose(torch.outer(gaussian_kernel1d(k), gaussian_kernel1d(k)), torch.from_numpy(ref), atol=1e-12)
    assert [odd_kernel_size(n) for n in (2, 3, 32, 33)] == [3, 3, 33, 33]
    with pytest.raises(ValueError, match='odd'): gaussian_kernel1d(4)
    with pytest.raises(ValueError, match='too small'): odd_kernel_size(0)
    x = torch.rand(2, 3, 20, 20)
    assert gaussian_blur(x, 5).shape == x.shape and torch.allclose(gaussian_blur(x, 5).mean(), x.mean(), atol=0.02)
    assert torch.allclose(gaussian_blur(torch.ones(1, 1, 20, 20), 5), torch.ones(1, 1, 20, 20))


def test_handle_flawmap_normalises_and_zeroes_flawless_maps():
    h = handle_flawmap(torch.rand(3, 1, 32, 32))
    assert torch.allclose(h.amax(dim=(1, 2, 3)), torch.ones(3), atol=1e-6) and h.amin() >= 0
    assert torch.equal(handle_flawmap(torch.full((1, 1, 32, 32), -2.0)), torch.zeros(1, 1, 32, 32))
    low = handle_flawmap(torch.full((1, 1, 32, 32), 0.05) + torch.rand(1, 1, 32, 32) * 0.01)
    assert (low <= 0).all()                                 # max <= 0.1: flawless (then normalised to a constant <= 0)


def test_dc_target_takes_the_lower_flaw_model_per_pixel():
    prob_l = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.55], [0.1, 0.2, 0.3, 0.4, 0.45]]).view(1, 2, 1, 5)
    prob_r = 1 - prob_l
    flaw_l = torch.tensor([0.1, 0.5, 0.7, 0.65, 0.3]).view(1, 1, 1, 5)
    flaw_r = torch.tensor([0.3, 0.2, 0.9, 0.5, 0.3]).view(1, 1, 1, 5)
    t_l, t_r, both = dc_targets(prob_l, prob_r, flaw_l, flaw_r, 0.6)
    src = lambda t: ''.join('l' if torch.equal(t[..., i], prob_l[..., i]) else 'r' if torch.equal(t[..., i], prob_r[..., i])
                            else '?' for i in range(5))
    # pixel: l better | r better | both bad (capped at 1: tie) | l bad, r not | exact tie
    assert src(t_l) == 'lrlrl' and src(t_r) == 'lrrrr'
    assert both.flatten().tolist() == [0, 0, 1, 0, 0]
    assert not t_l.requires_grad
    with pytest.raises(ValueError, match='flaw maps'): dc_targets(prob_l, prob_r, flaw_l[:, :, :, :3], flaw_r, 0.6)


def test_flaw_ground_truth_follows_the_prediction_error():
    target = torch.zeros(2, 32, 32, dtype=torch.long); target[:, :, 16:] = 1
    prob = F.one_hot(target, 2).permute(0, 3, 1, 2).float()
    wrong = prob.clone(); wrong[0, :, :8, :8] = wrong[0, :, :8, :8].flip(0); wrong[1, :, 24:, 24:] = wrong[1, :, 24:, 24:].flip(0)
    gt = flaw_ground_truth(wrong, target)
    assert gt.shape == (2, 1, 32, 32) and torch.allclose(gt.amax(dim=(1, 2, 3)), torch.ones(2), atol=1e-6)
    assert gt[0, 0, :8, :8].mean() > 0.5 > gt[0, 0, 24:, 24:].mean()
    assert gt[1, 0, 24:, 24:].mean() > 0.5 > gt[1, 0, :8, :8].mean()
    ignored = target.clone(); ignored[0, :8, 24:] = 255              # ignored pixels count as fully wrong
    assert flaw_ground_truth(prob, ignored)[0, 0, :8, 24:].mean() > 0.5
    with pytest.raises(ValueError, match='outside'): flaw_ground_truth(prob, torch.full_like(target, 2))
    with pytest.raises(ValueError, match='target'): flaw_ground_truth(prob, target[:, :8])


def test_frozen_restores_requires_grad_even_after_an_error():
    fd = FlawDetector(8, 8, gen(0))
    fd.classifier.bias.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with frozen(fd):
            assert not any(p.requires_grad for p in fd.parameters())
            raise RuntimeError('boom')
    assert fd.classifier.bias.requires_grad is False and fd.classifier.weight.requires_grad


def test_gct_task_losses_give_the_flaw_detector_no_gradient(data_root, tmp_path):
    tr = Trainer(tiny(data_root, 'gct', iters=40), run_dir=tmp_path / 'gct', progress=False)
    batch = tr.next_batch()
    ctx = tr.context()
    terms = gct_losses(ctx, batch)
    assert list(terms) == ['sup1', 'fc1', 'dc1', 'sup2', 'fc2', 'dc2']
    ramp = tr.nets[2].dc_rampup_iters
    assert ramp == 3 * (48 // 2)                           # 3 virtual epochs of max(16, 48) // 2 iterations
    assert terms['dc1'][1] == pytest.approx(100 * math.exp(-5)) and terms['fc1'][1] == 1.0
    sum(w * v for v, w in terms.values()).backward()
    assert all(p.grad is None and p.requires_grad for p in tr.nets[2].parameters())
    assert all(p.grad is not None for k in (0, 1) for p in tr.nets[k].parameters())
    # the flaw-correction term reaches the task model through the frozen flaw detector
    for p in tr.nets[0].parameters(): p.grad = None
    fc = gct_losses(tr.context(), batch)['fc1'][0]
    assert fc.item() > 0
    fc.backward()
    assert tr.nets[0].head.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tr.nets[2].parameters())


def test_flaw_detector_step_changes_only_its_parameters(data_root, tmp_path):
    tr = Trainer(tiny(data_root, 'gct'), run_dir=tmp_path / 'gct', progress=False)
    batch = tr.next_batch()
    before = [[p.detach().clone() for p in n.parameters()] for n in tr.nets]
    out = gct_after_step(tr.context(), batch)
    assert set(out) == {'fd'} and torch.isfinite(out['fd']) and out['fd'] > 0
    for k in (0, 1): assert all(torch.equal(a, b) for a, b in zip(before[k], tr.nets[k].parameters()))
    assert sum(not torch.equal(a, b) for a, b in zip(before[2], tr.nets[2].parameters())) > len(before[2]) // 2
    assert all(p.grad is None for n in tr.nets for p in n.parameters())
    assert len(tr.extra_opts['flaw_detector'][0].state_dict()['state']) == len(before[2])


def test_gct_optimiser_lr_ramp_and_networks_follow_the_recipe(data_root):
    voc = preset('voc_gct', '1_8')
    ctx = StepContext([None, None, FlawDetector(24, 8, gen())], voc)
    (opt, sched), = gct_extra_optimizers(ctx).values()
    g = opt.param_groups[0]
    assert sched is None and isinstance(opt, torch.optim.Adam)
    assert g['lr'] == pytest.approx(4e-4) and g['betas'] == (0.9, 0.99) and g['weight_decay'] == 0   # 1e-4 x 4 GPUs
    cfg = tiny(data_root, 'gct')
    assert gct_rampup_iters(cfg) == 72
    nets = build_gct(cfg, dict(num_classes=5, output_stride=4, pretrained=None))
    assert len(nets) == 3 and nets[2].convs[0].in_channels == 8 and nets[2].convs[0].out_channels == 8
    assert all(torch.equal(a, b) for a, b in zip(nets[0].backbone.state_dict().values(), nets[1].backbone.state_dict().values()))
    assert not torch.equal(nets[0].head.classifier.weight, nets[1].head.classifier.weight)
