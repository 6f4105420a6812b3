"`key=value` overrides typed by the declaration, complete config files and preflight (issue 12)."
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from cps_repro.presets import preset
from cps_repro.overrides import (NO_PRETRAINED, PreflightError, SHORT_KEYS, apply_overrides, check_choice, load_config,
                                 override_pairs, parse_field, preflight, project_path)


def test_every_group_and_every_pair_is_applied_in_order():
    c = apply_overrides(preset('mini_cps'), [['seed=9'], ['eval_every=2'], ['iters=2', 'batch_size=2']])
    assert (c.train.seed, c.train.eval_every, c.train.iters, c.train.batch_size, c.train.unlabeled_batch_size) == (9, 2, 2, 2, 2)


@pytest.mark.parametrize('over', [['iters=1', 'iters=2'], [['iters=1'], ['train.iters=2']], {'iters': 1, 'train.iters': 2}])
def test_a_key_given_twice_is_an_error_naming_both_values(over):
    with pytest.raises(ValueError, match=r'set twice \((train\.)?iters=1 and (train\.)?iters=2\)'):
        apply_overrides(preset('mini_cps'), over)


@pytest.mark.parametrize('over,hint', [('split=1_4', "--split 1_4"), ('split=18', '--split 1_8'), ('data.split=92', '--split 92'),
                                       ('method=cps_cutmix', 'voc_cps_cutmix'), ('train.method=supervised', 'preset'),
                                       ('backbone=resnet101', 'voc_cps_resnet101'), ('dataset=cityscapes', 'cityscapes_*')])
def test_keys_that_build_the_preset_are_refused_with_the_right_command(over, hint):
    with pytest.raises(ValueError, match='cannot be overridden') as e: apply_overrides(preset('voc_cps'), [over])
    assert hint in str(e.value)


def test_values_parse_by_the_declared_type_not_the_current_value(tmp_path):
    d = json.loads(preset('mini_cps').to_json()); d['hparams']['weight'] = 1          # an int in a config JSON
    p = tmp_path / 'c.json'; p.write_text(json.dumps(d))
    c = load_config(p)
    assert isinstance(c.hparams.weight, float) and apply_overrides(c, ['cps_weight=1.5']).hparams.weight == 1.5


@pytest.mark.parametrize('over,msg', [('iters=abc', 'iters=abc: expected an integer'), ('iters=0', 'iters'),
                                      ('batch_size=0', 'batch_size'), ('cps_weight=-1', 'cps_weight'),
                                      ('cps_weight=nan', 'finite'), ('optim.lr=inf', 'finite'), ('channels_last=maybe', 'boolean'),
                                      ('iters', 'key=value'), ('=3', 'no key')])
def test_bad_values_name_the_key(over, msg):
    with pytest.raises(ValueError, match=msg): apply_overrides(preset('mini_cps'), [over])


def test_unknown_keys_are_named():
    with pytest.raises(KeyError, match='iterz'): apply_overrides(preset('mini_cps'), ['iterz=1'])
    with pytest.raises(KeyError, match='nope'): apply_overrides(preset('mini_cps'), ['train.nope=1'])
    with pytest.raises(KeyError, match='iters'): apply_overrides(preset('mini_cps'), ['train.iters.x=1'])


def test_training_crop_and_evaluation_window_are_separate_keys():
    base = preset('cityscapes_cps')
    c = apply_overrides(base, ['crop_size=512'])
    assert c.data.crop_size == 512 and c.eval.crop_size == base.eval.crop_size == 800   # the sliding window stays
    assert apply_overrides(base, ['eval_crop_size=1024']).eval.crop_size == 1024
    assert SHORT_KEYS['crop_size'] == ('data.crop_size',)


def test_method_hyperparameters_in_a_field_annotated_any_are_reached():
    "The contract with the per-method hyperparameter dataclasses: walk the runtime dataclass, type by its declaration."
    @dataclass
    class HP:
        weight: float = field(default=1, metadata={'check': 'non_negative'})
        ema: float = field(default=0.99, metadata={'check': 'probability'})
        mode: str = field(default='box', metadata={'choices': ('box', 'half')})
        rampup: int | None = None
        scales: tuple = (1.0,)

    @dataclass
    class Cfg:
        hparams: Any = field(default_factory=HP)

    c = apply_overrides(Cfg(), ['hparams.weight=2', 'hparams.mode=half', 'hparams.rampup=none', 'hparams.scales=0.5,1'])
    assert c.hparams == HP(2.0, 0.99, 'half', None, (0.5, 1)) and isinstance(c.hparams.weight, float)
    for bad in ('hparams.weight=-1', 'hparams.ema=1.5', 'hparams.mode=diamond', 'hparams.rampup=x'):
        with pytest.raises(ValueError): apply_overrides(Cfg(), [bad])


def test_notebook_and_api_forms():
    assert override_pairs('iters=3 seed=2') == override_pairs('["iters=3", "seed=2"]') == [('iters', '3'), ('seed', '2')]
    assert override_pairs([('iters', 3)]) == [('iters', 3)]
    c = apply_overrides(preset('mini_cps'), {'iters': 3, 'model.pretrained': None, 'data.scales': [0.5, 1.0]})
    assert c.train.iters == 3 and c.model.pretrained is None and c.data.scales == (0.5, 1.0)
    with pytest.raises(ValueError, match='Unknown method'): check_choice('method', 'x', ('cps',))


def test_config_files_must_be_complete(tmp_path):
    d = json.loads(preset('mini_cps', '1_4').to_json())
    p = tmp_path / 'c.json'
    for drop, what in [(('optim',), "section 'optim'"), (('train', 'seed'), "key 'train.seed'")]:
        dd = json.loads(json.dumps(d)); obj = dd
        for k in drop[:-1]: obj = obj[k]
        del obj[drop[-1]]; p.write_text(json.dumps(dd))
        with pytest.raises(KeyError, match=what): load_config(p)
    p.write_text(json.dumps(d))
    assert load_config(p, split='1/4').data.split == '1_4'
    with pytest.raises(ValueError, match='--split 1_8 differs'): load_config(p, split='1_8')
    p.write_text('{"name": '); 
    with pytest.raises(ValueError, match='not valid JSON'): load_config(p)


def test_preflight(tmp_path):
    with pytest.raises(PreflightError, match=r'weights/resnet101_v1c\.pth.*Preparing the data'):
        preflight(preset('voc_cps_resnet101'), device='cpu')
    with pytest.raises(PreflightError, match='hrnet_w48.safetensors'):
        preflight(preset('cityscapes_cps_hrnet_w48', 'full'), device='cpu')
    with pytest.raises(PreflightError, match='not found'):
        preflight(apply_overrides(preset('voc_cps'), [f'pretrained={tmp_path}/missing.pth']), device='cpu')
    none = apply_overrides(preset('voc_cps'), ['pretrained=none'])
    assert none.model.pretrained == NO_PRETRAINED
    with pytest.raises(PreflightError, match='exp_mini'): preflight(none, device='cpu')
    assert preflight(none, device='cpu', allow_cpu=True) == 'cpu'
    assert preflight(preset('mini_cps'), device='cpu') == 'cpu'


def test_project_path(tmp_path):
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    assert project_path('data/voc', start=repo / 'nbs') == str(repo / 'data' / 'voc')
    assert project_path('data/voc', start=tmp_path) == 'data/voc' and project_path('/x/y') == '/x/y'


# ---- issue 26: booleans that look false are false -----------------------------------------------------------------
@pytest.mark.parametrize('value,expected', [(True, True), (False, False), ('no', False), ('False', False), ('0', False),
                                            (0, False), ('yes', True), ('true', True), ('1', True), (1, True), ('TRUE', True)])
def test_as_bool_parses_the_usual_spellings(value, expected):
    from cps_repro.overrides import as_bool
    assert as_bool(value, 'full_ceiling') is expected


@pytest.mark.parametrize('value', ['maybe', 'nein', 2, None, '', 0.5, [True]])
def test_as_bool_refuses_the_rest_naming_the_parameter(value):
    from cps_repro.overrides import as_bool
    with pytest.raises(ValueError, match='allow_cpu'): as_bool(value, 'allow_cpu')


def test_preflight_reads_allow_cpu_no_as_false():
    none = apply_overrides(preset('voc_cps'), ['pretrained=none'])
    with pytest.raises(PreflightError, match='exp_mini'): preflight(none, device='cpu', allow_cpu='no')
    with pytest.raises(ValueError, match='allow_cpu'): preflight(none, device='cpu', allow_cpu='sure')
    assert preflight(none, device='cpu', allow_cpu='yes') == 'cpu'
