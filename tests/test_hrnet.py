"HRNet-W48 from timm with the HRNetV2 head: parameter count, shapes, strict loading of timm's key format, no downloads."
import math
import warnings

import pytest
import torch

from cps_repro.config import BACKBONES as CONFIG_BACKBONES, ExperimentConfig, ModelConfig
from cps_repro.models import (HRNET_BACKBONES, BackboneWeightsError, DeepLabV3Plus, HRNetV2, backbone_names,
                              build_backbone, count_parameters, deeplabv3plus, hrnet_backbone, hrnetv2,
                              load_backbone_weights, make_cps_pair, save_backbone, segmentation_model)

torch.set_num_threads(1)
HEAD_KEYS = HRNET_BACKBONES['hrnet_w48'].classification_keys


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope='module')
def hr():
    "One HRNet-W48 for 19 classes, built once for the module (about two seconds)."
    return deeplabv3plus('hrnet_w48', 19, generator=gen(0)).eval()


@pytest.fixture(scope='module')
def timm_cls_shapes():
    "Names and shapes of timm's ImageNet HRNet-W48 (the classification model), built on the meta device."
    import timm
    with torch.device('meta'):
        return {k: tuple(v.shape) for k, v in timm.create_model('hrnet_w48', pretrained=False).state_dict().items()}


def test_parameter_count_is_hrnetv2_w48(hr):
    n_bb, n_head = count_parameters(hr.backbone), count_parameters(hr.head)
    assert n_head == 720 * 720 + 720 + 2 * 720 + 720 * 19 + 19
    assert n_bb == 65_325_120
    assert round((n_bb + n_head) / 1e6, 1) == 65.9      # the HRNet paper's figure for HRNetV2-W48


def test_branch_and_logit_shapes_at_64px(hr):
    x = torch.randn(1, 3, 64, 64, generator=gen(1))
    with torch.no_grad():
        feats = hr.backbone(x)
        assert [tuple(f.shape) for f in feats] == [(1, 48, 16, 16), (1, 96, 8, 8), (1, 192, 4, 4), (1, 384, 2, 2)]
        assert tuple(hr.head(feats).shape) == (1, 19, 16, 16)
        logits = hr(x)
    assert tuple(logits.shape) == (1, 19, 64, 64) and torch.isfinite(logits).all()
    assert isinstance(hr, HRNetV2) and hr.num_classes == 19 and hr.classifier is hr.head.classifier


def test_any_input_size_through_padding(hr):
    x = torch.randn(1, 3, 50, 70, generator=gen(2))
    with torch.no_grad():
        out = hr(x)
        padded = hr(torch.nn.functional.pad(x, (0, 26, 0, 14)))       # what forward does inside
    assert tuple(out.shape) == (1, 19, 50, 70)
    with pytest.raises(RuntimeError):                                   # timm's fusion alone refuses such sizes
        with torch.no_grad(): hr.backbone(x)
    assert padded.shape[-2:] == (64, 96) and torch.allclose(out, padded[..., :50, :70])


def test_training_step_gives_gradients_to_backbone_and_head():
    m = segmentation_model('hrnet_w48', 3, generator=gen(3)).train()
    loss = torch.nn.functional.cross_entropy(m(torch.randn(2, 3, 32, 32, generator=gen(4))), torch.randint(3, (2, 32, 32), generator=gen(5)))
    loss.backward()
    assert m.backbone.conv1.weight.grad.abs().sum() > 0 and m.head.classifier.weight.grad.abs().sum() > 0
    assert m.backbone.stage4[0].branches[3][0].conv1.weight.grad is not None


def test_expected_keys_are_timms_imagenet_keys_minus_its_classification_head(hr, timm_cls_shapes):
    bb = hr.backbone.state_dict()
    assert {k for k in timm_cls_shapes if not k.startswith(HEAD_KEYS)} == set(bb)
    assert all(timm_cls_shapes[k] == tuple(v.shape) for k, v in bb.items())
    assert {k.split('.')[0] for k in timm_cls_shapes if k.startswith(HEAD_KEYS)} == {p.rstrip('.') for p in HEAD_KEYS}


def _fake_imagenet_file(hr, timm_cls_shapes, seed=7):
    "A state dict in timm's ImageNet format: random backbone weights plus the classification head's keys."
    g = gen(seed)
    sd = {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in hr.backbone.state_dict().items()}
    sd.update({k: torch.zeros(s) for k, s in timm_cls_shapes.items() if k.startswith(HEAD_KEYS)})
    return sd


def test_timm_format_loads_strictly_and_reports_the_head_as_ignored(hr, timm_cls_shapes):
    sd = _fake_imagenet_file(hr, timm_cls_shapes)
    target = hrnet_backbone('hrnet_w48')
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                  # nothing "unexpected"
        report = load_backbone_weights(target, {'state_dict': {f'module.{k}': v for k, v in sd.items()}}, 'hrnet_w48')
    assert len(report.loaded) == len(hr.backbone.state_dict()) and not report.unexpected
    assert set(report.ignored) == {k for k in timm_cls_shapes if k.startswith(HEAD_KEYS)}
    assert torch.equal(target.transition3[3][0][0].weight, sd['transition3.3.0.0.weight'])


def test_missing_and_misshaped_keys_are_refused_by_name(hr, timm_cls_shapes):
    sd = _fake_imagenet_file(hr, timm_cls_shapes)
    missing = dict(sd); del missing['stage3.2.fuse_layers.1.0.0.0.weight']
    with pytest.raises(BackboneWeightsError) as e:
        load_backbone_weights(hrnet_backbone(), missing, 'hrnet_w48')
    assert 'stage3.2.fuse_layers.1.0.0.0.weight' in str(e.value) and 'hrnet_w48.ms_in1k' in str(e.value)
    shaped = dict(sd, **{'bn1.weight': torch.ones(32)})
    with pytest.raises(BackboneWeightsError, match=r'bn1.weight: expected \(64,\), found \(32,\)'):
        load_backbone_weights(hrnet_backbone(), shaped, 'hrnet_w48')


def test_a_resnet_file_is_refused_with_a_hint():
    r50 = build_backbone('resnet50').state_dict()
    with pytest.raises(BackboneWeightsError, match='resnet50 / resnet101'):
        load_backbone_weights(hrnet_backbone(), r50, 'hrnet_w48')


def test_missing_pretrained_file_fails_before_building(tmp_path):
    with pytest.raises(FileNotFoundError, match='hrnet_w48.ms_in1k'):
        hrnetv2('hrnet_w48', 19, pretrained=tmp_path / 'nope.safetensors')


def test_safetensors_files_load(tmp_path):
    from safetensors.torch import save_file
    src = deeplabv3plus('small_resnet', 3, 8, generator=gen(0))
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(tmp_path / 'small.safetensors'))
    again = deeplabv3plus('small_resnet', 3, 8, pretrained=tmp_path / 'small.safetensors', generator=gen(1))
    assert all(torch.equal(a, b) for a, b in zip(src.backbone.state_dict().values(), again.backbone.state_dict().values()))


def test_nothing_is_ever_downloaded(monkeypatch):
    import huggingface_hub, timm.models._builder as builder
    def refuse(*a, **k): raise AssertionError('tried to download')
    monkeypatch.setattr(builder, 'load_pretrained', refuse)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', refuse)
    with torch.device('meta'):
        bb = hrnet_backbone('hrnet_w48')
    assert bb.out_channels == (48, 96, 192, 384) and bb.name == 'hrnet_w48'


def test_cps_pair_shares_the_backbone_and_draws_two_heads(hr):
    n1, n2 = make_cps_pair('hrnet_w48', 19, seed=0)
    assert isinstance(n1, HRNetV2) and isinstance(n2, HRNetV2)
    assert all(torch.equal(a, b) for a, b in zip(n1.backbone.state_dict().values(), n2.backbone.state_dict().values()))
    assert not torch.equal(n1.head.last_layer[0].weight, n2.head.last_layer[0].weight)
    w = n1.head.last_layer[0].weight                                    # recipe §1 head init: Kaiming fan_in
    assert abs(w.std().item() / math.sqrt(2 / 720) - 1) < 0.02
    assert all(torch.equal(a, b) for a, b in zip(n1.state_dict().values(), hr.state_dict().values()))   # seed 0 = hr's draws


def test_same_seed_same_network(hr):
    again = hrnetv2('hrnet_w48', 19, generator=gen(0))
    assert all(torch.equal(a, b) for a, b in zip(hr.state_dict().values(), again.state_dict().values()))


def test_names_and_bad_arguments():
    assert 'hrnet_w48' in backbone_names() and 'hrnet_w48' in CONFIG_BACKBONES
    assert isinstance(segmentation_model('small_resnet', 3, 8), DeepLabV3Plus)
    with pytest.raises(ValueError, match='output_stride'):
        deeplabv3plus('hrnet_w48', 19, output_stride=8)
    with pytest.raises(ValueError, match='aspp_rates'):
        deeplabv3plus('hrnet_w48', 19, aspp_rates=(1, 2, 3))
    with pytest.raises(ValueError, match='hrnet_w48'):
        deeplabv3plus('hrnet_w32', 19)                                  # the error lists the valid names
    with pytest.raises(ValueError, match='num_classes'):
        hrnetv2('hrnet_w48', 0)
    with pytest.raises(ValueError, match='output-stride'):
        ExperimentConfig(model=ModelConfig(backbone='hrnet_w48', output_stride=8)).validate()
