"""Tests of cps_repro.models: architecture (counts, shapes, dilation), strict pretrained loading, the CPS pair, init."""
import copy
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

torch.set_num_threads(1)

from cps_repro.models import (BACKBONES, BackboneWeightsError, DeepLabV3Plus, build_backbone, count_parameters,
                              deeplabv3plus, dilation_plan, load_backbone_weights, make_cps_pair, normalize_state_dict,
                              save_backbone, small_resnet)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope='module')
def r50():
    "Official R50 DeepLabv3+, 21 classes (VOC), OS16, built once for the module."
    return deeplabv3plus('resnet50', 21, generator=gen(0)).eval()


@pytest.fixture(scope='module')
def r101():
    "Official R101 DeepLabv3+, 19 classes (Cityscapes), OS16."
    return deeplabv3plus('resnet101', 19, generator=gen(0)).eval()


@pytest.fixture(scope='module')
def tv_r50_state():
    return torchvision.models.resnet50(weights=None).state_dict()


# ---------------------------------------------------------------- parameter counts, computed independently

def tv_backbone_params(depth):
    "Parameters of torchvision's ResNet-<depth> without its fc layer (built on the meta device: no memory, no init)."
    with torch.device('meta'):
        m = getattr(torchvision.models, f'resnet{depth}')()
    return count_parameters(m) - count_parameters(m.fc)


def deep_stem_backbone_params(depth):
    """torchvision's count with its stem swapped for the official deep stem:
    - torchvision stem: conv 3->64 7x7 (3*64*49) + BN(64) (2*64);
    - deep stem: convs 3->64, 64->64, 64->128, all 3x3, + BN(64), BN(64), BN(128) (bn1);
    - layer1.0 then reads 128 instead of 64 channels: conv1 (1x1 ->64) and downsample (1x1 ->256) grow by 64 inputs."""
    tv_stem = 3 * 64 * 49 + 2 * 64
    deep_stem = 9 * (3 * 64 + 64 * 64 + 64 * 128) + 2 * (64 + 64 + 128)
    layer1_extra = 64 * 64 + 64 * 256
    return tv_backbone_params(depth) - tv_stem + deep_stem + layer1_extra


def head_params(num_classes, cin=2048, low=256, a=256, l=48, d=256, n_rates=3):
    "Recipe §1 head, counted term by term (BN = 2 parameters per channel; all convs bias-free except the classifier)."
    aspp = (cin * a                       # 1x1 branch
            + n_rates * cin * a * 9       # dilated 3x3 branches
            + 2 * a * (n_rates + 1)       # map_bn over the concatenation
            + a * (n_rates + 1) * a       # 1x1 reduction
            + cin * a + 2 * a + a * a     # pooled branch: conv, BN, conv
            + 2 * a)                      # red_bn
    decoder = low * l + 2 * l + (a + l) * d * 9 + 2 * d + d * d * 9 + 2 * d
    return aspp + decoder + d * num_classes + num_classes


# Pinned totals (backbone + head), from the formulas above: R50 backbone 23,631,808, R101 backbone 42,623,936,
# head 16,838,752 + 257 * C.
PINNED = {('resnet50', 21): 40_475_957, ('resnet50', 19): 40_475_443,
          ('resnet101', 21): 59_468_085, ('resnet101', 19): 59_467_571}


@pytest.mark.parametrize('name,num_classes', list(PINNED))
def test_parameter_counts(name, num_classes, r50, r101):
    if (name, num_classes) == ('resnet50', 21): m = r50
    elif (name, num_classes) == ('resnet101', 19): m = r101
    else: m = deeplabv3plus(name, num_classes, generator=gen(0))
    depth = int(name[len('resnet'):])
    assert count_parameters(m.backbone) == deep_stem_backbone_params(depth)
    assert count_parameters(m.head) == head_params(num_classes)
    assert count_parameters(m) == PINNED[name, num_classes]
    assert count_parameters(m) == count_parameters(m.backbone) + count_parameters(m.head)


@pytest.mark.parametrize('depth', [50, 101])
def test_torchvision_stem_backbone_has_torchvisions_count(depth):
    with torch.device('meta'):
        bb = build_backbone(f'resnet{depth}_tv')
    assert count_parameters(bb) == tv_backbone_params(depth)


def test_small_model_is_small_and_head_widths_are_parameters():
    m = deeplabv3plus('small_resnet', 21, 8, generator=gen(0))
    assert 150_000 <= count_parameters(m) <= 400_000
    assert count_parameters(m.head) == head_params(21, cin=64, low=16, a=32, l=16, d=32)
    wide = deeplabv3plus('small_resnet', 21, 8, generator=gen(0), aspp_channels=40, low_level_channels=8,
                         decoder_channels=24, aspp_rates=(1, 2, 3, 4))
    assert count_parameters(wide.head) == head_params(21, cin=64, low=16, a=40, l=8, d=24, n_rates=4)
    assert [c.dilation[0] for c in wide.head.aspp.map_convs[1:]] == [1, 2, 3, 4]


# ---------------------------------------------------------------- shapes and output stride

def test_output_shapes_r50_r101(r50, r101):
    with torch.no_grad():
        assert r50(torch.zeros(1, 3, 64, 64)).shape == (1, 21, 64, 64)
        assert r50(torch.zeros(1, 3, 65, 97)).shape == (1, 21, 65, 97)
        assert r101(torch.zeros(1, 3, 65, 65)).shape == (1, 19, 65, 65)


def test_layer1_to_layer4_strides_and_dilations(r50):
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        f16 = r50.backbone(x)
        os8 = build_backbone('resnet50', 8).eval()
        f8 = os8(x)
    assert [tuple(f.shape[1:]) for f in f16] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 4, 4)]
    assert [tuple(f.shape[1:]) for f in f8] == [(256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 8, 8)]
    bb = r50.backbone
    assert [(b.conv2.dilation[0], b.conv2.stride[0]) for b in bb.layer4] == [(2, 1), (4, 1), (8, 1)]
    assert bb.layer4[0].downsample[0].stride == (1, 1) and bb.layer3[0].conv2.stride == (2, 2)
    assert all(b.conv2.dilation == (1, 1) for b in bb.layer3)
    assert [b.conv2.dilation[0] for b in os8.layer3] == [2] * 6 and os8.layer3[0].conv2.stride == (1, 1)
    assert [b.conv2.dilation[0] for b in os8.layer4] == [4, 8, 16]
    assert all(b.conv2.padding == b.conv2.dilation for b in list(os8.layer3) + list(os8.layer4))


def test_aspp_rates_follow_output_stride():
    m16 = deeplabv3plus('small_resnet', 3, 16, generator=gen(0))
    assert [c.dilation[0] for c in m16.head.aspp.map_convs[1:]] == [1, 2, 3]      # small: fixed rates
    assert BACKBONES['resnet50'].rates(16) == (6, 12, 18) and BACKBONES['resnet50'].rates(8) == (12, 24, 36)
    assert BACKBONES['small_resnet'].rates(4) == (1, 2, 3)


def test_dilation_plan_rejects_unsupported_output_stride():
    assert dilation_plan(16, (3, 4, 23, 3))[3] == (1, (2, 4, 8))
    for bad in (32, 2, 12):
        with pytest.raises(ValueError, match='output_stride'):
            dilation_plan(bad, (3, 4, 6, 3))
    with pytest.raises(ValueError, match='output_stride'):
        deeplabv3plus('small_resnet', 2, 32)


def test_small_resnet_output_strides_and_training_step():
    x = torch.randn(2, 3, 32, 32, generator=gen(1))
    for os_, side in ((4, 8), (8, 4), (16, 2)):
        with torch.no_grad():
            assert small_resnet(os_).eval()(x)[-1].shape == (2, 64, side, side)
    m = deeplabv3plus('small_resnet', 5, 4, generator=gen(0)).train()
    out = m(x)
    assert out.shape == (2, 5, 32, 32)
    out.logsumexp(1).mean().backward()
    unused = [n for n, p in m.named_parameters() if p.grad is None]
    assert not unused, f'parameters without gradient: {unused}'


def test_small_resnet_s2_keeps_layer1_and_the_decoder_at_stride_2():
    x = torch.randn(2, 3, 32, 32, generator=gen(1))
    bb = build_backbone('small_resnet_s2', 4).eval()
    assert isinstance(bb.maxpool, nn.Identity) and bb.stem_stride == 2
    with torch.no_grad():
        assert [tuple(f.shape[-2:]) for f in bb(x)] == [(16, 16), (8, 8), (8, 8), (8, 8)]
        assert [tuple(f.shape[-2:]) for f in build_backbone('small_resnet', 4).eval()(x)] == [(8, 8)] * 4
    assert [b[0].conv1.dilation[0] for b in (bb.layer2, bb.layer3, bb.layer4)] == [1, 2, 4]
    m = deeplabv3plus('small_resnet_s2', 5, 4, generator=gen(0)).train()
    seen = {}
    def record(module, inputs, output): seen['logits'] = tuple(output.shape)
    m.head.classifier.register_forward_hook(record)
    out = m(x)
    assert out.shape == (2, 5, 32, 32) and seen['logits'] == (2, 5, 16, 16)   # decoder output at stride 2
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert count_parameters(m) == count_parameters(deeplabv3plus('small_resnet', 5, 4))   # the max-pool has no weights
    with pytest.raises(ValueError, match='stem_stride'):
        dilation_plan(4, (1, 1, 1, 1), stem_stride=8)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='resnet50_tv'):
        deeplabv3plus('resnet18', 21)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match='num_classes'):
            deeplabv3plus('small_resnet', bad)
    with pytest.raises(TypeError):
        deeplabv3plus('small_resnet', 3, dropout=0.1)


# ---------------------------------------------------------------- the head computes recipe §1, step by step

def randomize_bn_(module, seed=0):
    "Non-trivial BN statistics and affine parameters, so that a BN used in the wrong place changes the output."
    g = gen(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=g); m.running_var.uniform_(0.5, 2, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g); m.bias.normal_(0, 0.5, generator=g)
    return module


def reference_head(head, low, high, rates):
    "Recipe §1 written out with functional ops (eval-mode BN)."
    def bn(m, t): return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 1e-5)
    def lrelu(t): return F.leaky_relu(t, 0.01)
    a = head.aspp
    branches = [F.conv2d(high, a.map_convs[0].weight)]
    branches += [F.conv2d(high, c.weight, padding=r, dilation=r) for c, r in zip(a.map_convs[1:], rates)]
    y = F.conv2d(lrelu(bn(a.map_bn, torch.cat(branches, 1))), a.red_conv.weight)
    pooled = lrelu(bn(a.global_pooling_bn, F.conv2d(high.mean((2, 3), keepdim=True), a.global_pooling_conv.weight)))
    y = lrelu(bn(a.red_bn, y + F.conv2d(pooled, a.pool_red_conv.weight)))
    red = F.relu(bn(head.reduce[1], F.conv2d(low, head.reduce[0].weight)))
    y = torch.cat([F.interpolate(y, size=red.shape[-2:], mode='bilinear', align_corners=True), red], 1)
    y = F.relu(bn(head.last_conv[1], F.conv2d(y, head.last_conv[0].weight, padding=1)))
    y = F.relu(bn(head.last_conv[4], F.conv2d(y, head.last_conv[3].weight, padding=1)))
    return F.conv2d(y, head.classifier.weight, head.classifier.bias)


def test_r50_head_matches_the_recipe(r50):
    head = randomize_bn_(copy.deepcopy(r50.head)).eval()           # a copy: the fixture stays as built
    low, high = torch.randn(1, 256, 20, 24, generator=gen(1)), torch.randn(1, 2048, 5, 6, generator=gen(2))
    with torch.no_grad():
        torch.testing.assert_close(head([low, None, None, high]), reference_head(head, low, high, (6, 12, 18)),
                                   rtol=1e-4, atol=1e-4)


def test_small_model_forward_matches_the_recipe():
    m = randomize_bn_(deeplabv3plus('small_resnet', 3, 8, generator=gen(3))).eval()
    x = torch.randn(2, 3, 40, 56, generator=gen(4))
    with torch.no_grad():
        feats = m.backbone(x)
        ref = F.interpolate(reference_head(m.head, feats[0], feats[3], (1, 2, 3)), size=(40, 56), mode='bilinear',
                            align_corners=True)
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- module names (checkpoint compatibility)

def test_deep_stem_key_names_match_v1c_layout(r50):
    sd = r50.backbone.state_dict()
    shapes = {'conv1.0.weight': (64, 3, 3, 3), 'conv1.1.weight': (64,), 'conv1.3.weight': (64, 64, 3, 3),
              'conv1.4.running_var': (64,), 'conv1.6.weight': (128, 64, 3, 3), 'bn1.weight': (128,),
              'layer1.0.conv1.weight': (64, 128, 1, 1), 'layer1.0.downsample.0.weight': (256, 128, 1, 1),
              'layer1.0.downsample.1.running_mean': (256,), 'layer4.2.conv3.weight': (2048, 512, 1, 1)}
    for k, s in shapes.items(): assert tuple(sd[k].shape) == s, k
    assert not any(k.startswith('fc.') or k.startswith('conv1.2') for k in sd)
    assert sum(k.startswith('layer3.') and k.endswith('conv1.weight') for k in sd) == 6
    bns = [m for m in r50.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-5 and m.momentum == 0.1 for m in bns)


def test_deep_stem_computes_the_recipe():
    "Three 3x3 convs (stride 2 on the first) with BN+ReLU between, then BN+ReLU and a 3x3/2 max-pool."
    bb = randomize_bn_(small_resnet(8)).eval()
    def bn(m, t): return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 1e-5)
    c = bb.conv1
    x = torch.randn(2, 3, 33, 31, generator=gen(6))
    y = F.relu(bn(c[1], F.conv2d(x, c[0].weight, stride=2, padding=1)))
    y = F.relu(bn(c[4], F.conv2d(y, c[3].weight, padding=1)))
    y = F.relu(bn(bb.bn1, F.conv2d(y, c[6].weight, padding=1)))
    y = F.max_pool2d(y, 3, stride=2, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(bb.stem(x), y)
        assert bb(x)[0].shape[-2:] == y.shape[-2:] == (9, 8)


def test_torchvision_state_dict_loads_key_for_key(tv_r50_state):
    bb = build_backbone('resnet50_tv').eval()
    report = load_backbone_weights(bb, tv_r50_state)
    tv_keys = [k for k in tv_r50_state if not k.startswith('fc.')]
    assert set(bb.state_dict()) == set(tv_keys) and sorted(report.loaded) == sorted(tv_keys)
    assert sorted(report.ignored) == ['fc.bias', 'fc.weight'] and report.unexpected == []
    for k in tv_keys: assert torch.equal(bb.state_dict()[k], tv_r50_state[k]), k
    # Same weights, same computation up to layer3 (OS16 only changes layer4).
    tv = torchvision.models.resnet50(weights=None)
    tv.load_state_dict(tv_r50_state)
    tv.eval()
    x = torch.randn(1, 3, 64, 64, generator=gen(2))
    with torch.no_grad():
        ref = tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
        torch.testing.assert_close(bb(x)[2], ref)


def test_torchvision_file_into_deep_stem_is_refused_with_hint(tv_r50_state, tmp_path):
    path = tmp_path / 'resnet50-0676ba61.pth'
    torch.save(tv_r50_state, path)
    with pytest.raises(BackboneWeightsError) as e:
        deeplabv3plus('resnet50', 21, pretrained=path)
    msg = str(e.value)
    assert 'conv1.0.weight' in msg and str(path) in msg and 'resnet50_v1c.pth' in msg and "'_tv' backbone" in msg


# ---------------------------------------------------------------- strict loading, round trip

@pytest.fixture(scope='module')
def small_pair():
    return deeplabv3plus('small_resnet', 4, 8, generator=gen(0)).eval(), deeplabv3plus('small_resnet', 4, 8, generator=gen(1)).eval()


def test_save_backbone_round_trip(small_pair, tmp_path):
    a, b = small_pair
    with torch.no_grad():                      # give running stats non-default values so that buffers are tested too
        for m in a.backbone.modules():
            if isinstance(m, nn.BatchNorm2d): m.running_mean.uniform_(-1, 1, generator=gen(5)); m.num_batches_tracked += 7
    path = save_backbone(a, tmp_path / 'sub' / 'small.pt')
    assert path.is_file() and not list(path.parent.glob('*.tmp'))
    c = deeplabv3plus('small_resnet', 4, 8, pretrained=path, generator=gen(1)).eval()
    x = torch.randn(2, 3, 40, 40, generator=gen(3))
    with torch.no_grad():
        for fa, fc in zip(a.backbone(x), c.backbone(x)): assert torch.equal(fa, fc)
        assert torch.equal(c.head.classifier.weight, b.head.classifier.weight)   # same generator seed as b
        assert not torch.equal(a(x), b(x))
    for k, v in a.backbone.state_dict().items(): assert torch.equal(v, c.backbone.state_dict()[k]), k
    assert set(torch.load(path)) == set(a.backbone.state_dict())


def test_save_backbone_accepts_a_bare_backbone(small_pair, tmp_path):
    path = save_backbone(small_pair[0].backbone, tmp_path / 'bb.pt')
    bb = small_resnet(8)
    load_backbone_weights(bb, path)
    for k, v in small_pair[0].backbone.state_dict().items(): assert torch.equal(v, bb.state_dict()[k]), k


def test_missing_key_is_refused_with_its_name(small_pair):
    sd = dict(small_pair[0].backbone.state_dict())
    del sd['layer2.0.downsample.0.weight']
    with pytest.raises(BackboneWeightsError) as e:
        load_backbone_weights(small_resnet(8), sd)
    assert 'layer2.0.downsample.0.weight' in str(e.value) and 'Missing' in str(e.value)
    assert 'save_backbone' in str(e.value)                     # says which weights small_resnet expects


def test_misshaped_key_is_refused_with_both_shapes(small_pair, tmp_path):
    sd = dict(small_pair[0].backbone.state_dict())
    sd['layer3.0.conv1.weight'] = torch.zeros(48, 32, 1, 1)
    path = tmp_path / 'bad.pt'
    torch.save(sd, path)
    bb = small_resnet(8)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    with pytest.raises(BackboneWeightsError) as e:
        load_backbone_weights(bb, path)
    assert 'layer3.0.conv1.weight: expected (48, 32, 3, 3), found (48, 32, 1, 1)' in str(e.value)
    assert str(path) in str(e.value)
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in before.items())    # nothing half-loaded


@pytest.mark.parametrize('name,fname', [('resnet50', 'resnet50_v1c.pth'), ('resnet101', 'resnet101_v1c.pth'),
                                        ('resnet50_tv', 'resnet50-0676ba61.pth'), ('resnet101_tv', 'resnet101-63fe2227.pth')])
def test_missing_file_names_the_path_and_the_expected_weights(name, fname, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        deeplabv3plus(name, 21, pretrained=tmp_path / 'nowhere.pth')
    assert 'nowhere.pth' in str(e.value) and fname in str(e.value)
    assert fname in BACKBONES[name].weights


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'junk.pth'
    path.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth'):
        load_backbone_weights(small_resnet(8), path)


@pytest.mark.parametrize('wrap', ['state_dict', 'model', 'module', 'module.backbone', 'full_model'])
def test_wrapped_and_prefixed_checkpoints_load(small_pair, wrap, tmp_path):
    a = small_pair[0]
    sd = a.backbone.state_dict()
    ckpt = {'state_dict': {'module.' + k: v for k, v in sd.items()}, 'epoch': 3} if wrap == 'state_dict' else \
           {'model': dict(sd), 'optimizer': {}} if wrap == 'model' else \
           {'module.' + k: v for k, v in sd.items()} if wrap == 'module' else \
           {'module.backbone.' + k: v for k, v in sd.items()} if wrap == 'module.backbone' else \
           a.state_dict()
    path = tmp_path / 'ck.pt'
    torch.save(ckpt, path)
    bb = small_resnet(8)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                     # no warning: head keys of a whole model are not "unexpected"
        report = load_backbone_weights(bb, path)
    assert sorted(report.loaded) == sorted(sd)
    if wrap == 'full_model': assert report.ignored and all(k.startswith('head.') for k in report.ignored)
    for k, v in sd.items(): assert torch.equal(v, bb.state_dict()[k]), k


def test_unexpected_keys_warn_and_fc_is_ignored(small_pair):
    sd = dict(small_pair[0].backbone.state_dict())
    sd['aux.weight'] = torch.zeros(3)
    sd['fc.weight'] = torch.zeros(1000, 64)
    with pytest.warns(UserWarning, match='aux.weight'):
        report = load_backbone_weights(small_resnet(8), sd)
    assert report.unexpected == ['aux.weight'] and report.ignored == ['fc.weight']


def test_missing_num_batches_tracked_is_allowed(small_pair):
    sd = {k: v for k, v in small_pair[0].backbone.state_dict().items() if not k.endswith('num_batches_tracked')}
    bb = small_resnet(8)
    load_backbone_weights(bb, sd)
    assert torch.equal(bb.layer1[0].bn1.running_var, small_pair[0].backbone.layer1[0].bn1.running_var)


def test_normalize_state_dict_rejects_non_tensors():
    with pytest.raises(TypeError):
        normalize_state_dict({'conv1.weight': [1, 2, 3]})
    with pytest.raises(TypeError):
        normalize_state_dict([1, 2])


# ---------------------------------------------------------------- the CPS pair and initialisation

def test_make_cps_pair_identical_backbones_different_heads_deterministic():
    state = torch.random.get_rng_state()
    n1, n2 = make_cps_pair('small_resnet', 5, 4, seed=7)
    assert torch.equal(state, torch.random.get_rng_state()), 'global RNG was disturbed'
    assert isinstance(n1, DeepLabV3Plus) and n1.num_classes == 5
    sd1, sd2 = n1.backbone.state_dict(), n2.backbone.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    h1, h2 = dict(n1.head.named_parameters()), dict(n2.head.named_parameters())
    convs = [k for k in h1 if k.endswith('weight') and h1[k].ndim == 4]
    assert convs and all(not torch.equal(h1[k], h2[k]) for k in convs)
    assert not torch.equal(n1.head.classifier.bias, n2.head.classifier.bias)
    m1, m2 = make_cps_pair('small_resnet', 5, 4, seed=7)
    for a, b in ((n1, m1), (n2, m2)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()): assert torch.equal(v, w), k
    o1, _ = make_cps_pair('small_resnet', 5, 4, seed=8)
    assert not torch.equal(o1.head.aspp.red_conv.weight, n1.head.aspp.red_conv.weight)
    x = torch.randn(2, 3, 32, 32, generator=gen(4))
    with torch.no_grad():
        assert not torch.equal(n1.eval()(x), n2.eval()(x))


def test_make_cps_pair_with_pretrained_file(small_pair, tmp_path):
    path = save_backbone(small_pair[1], tmp_path / 'small.pt')
    n1, n2 = make_cps_pair('small_resnet', 4, 8, pretrained=path, seed=0)
    ref = small_pair[1].backbone.state_dict()
    for k, v in ref.items():
        assert torch.equal(n1.backbone.state_dict()[k], v) and torch.equal(n2.backbone.state_dict()[k], v), k
    assert not torch.equal(n1.head.last_conv[0].weight, n2.head.last_conv[0].weight)


def test_deeplabv3plus_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    deeplabv3plus('small_resnet', 3, 8, generator=gen(0))
    assert torch.equal(state, torch.random.get_rng_state())


def test_head_init_statistics(r50):
    head = r50.head
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6
    for m in bns:
        assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
        assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) and torch.equal(m.running_var, torch.ones_like(m.running_var))
    # Kaiming normal, fan_in, ReLU gain: std = sqrt(2 / fan_in), mean 0.
    for w in (head.aspp.map_convs[2].weight, head.aspp.global_pooling_conv.weight, head.last_conv[0].weight):
        fan_in = w[0].numel()
        assert abs(w.std().item() / math.sqrt(2 / fan_in) - 1) < 0.02
        assert abs(w.mean().item()) < 0.01 * math.sqrt(2 / fan_in)
    cw = head.classifier.weight
    assert abs(cw.std().item() / math.sqrt(2 / 256) - 1) < 0.15
    b = head.classifier.bias
    assert b.abs().max() <= 1 / math.sqrt(256) and b.abs().max() > 0      # PyTorch's default: U(±1/sqrt(fan_in))
    # backbone without a file: torchvision's init, Kaiming normal fan_out
    w = r50.backbone.layer3[0].conv2.weight
    assert abs(w.std().item() / math.sqrt(2 / (w.shape[0] * 9)) - 1) < 0.02


def test_registry_describes_weights():
    assert set(BACKBONES) == {'resnet50', 'resnet101', 'resnet50_tv', 'resnet101_tv', 'small_resnet', 'small_resnet_s2'}
    assert 'v1s' in BACKBONES['resnet50'].weights and 'OneDrive' in BACKBONES['resnet101'].source
    assert 'IMAGENET1K_V1' in BACKBONES['resnet50_tv'].weights
    with pytest.raises(TypeError):
        BACKBONES['resnet18'] = BACKBONES['resnet50']                     # read-only registry
