"Methods are plugins: a toy method defined here alone trains end to end through `cps-repro train`."
import dataclasses, json
from dataclasses import dataclass

import pytest
import torch

from cps_repro.cli import main as cli_main
from cps_repro.config import checked, method_params, ExperimentConfig, TrainConfig
from cps_repro.presets import register_preset, unregister_preset, preset, list_presets
from cps_repro.methods import (Method, StepContext, register_method, get_method, method_names, supervised_loss,
                               one_network, paper_rows, method_label, unregister_method)
from cps_repro.config import registered_methods
from cps_repro.synthetic import synthesize


@dataclass
class ToyParams:
    "The toy method's one hyperparameter: how much it penalises confident predictions on unlabeled images."
    entropy_weight: float = checked(0.1, 'non_negative')


def toy_losses(ctx: StepContext, batch: dict) -> dict:
    "Supervised CE on 'labeled' plus the mean prediction entropy on 'unlabeled' (entropy minimisation)."
    lab, xu = batch['labeled'], batch['unlabeled']['image']
    p = ctx.forward('net', xu).softmax(1)
    entropy = -(p * p.clamp_min(1e-8).log()).sum(1).mean()
    return {'sup': (supervised_loss(ctx.forward('net', lab['image']), lab['label'], ctx.cfg), 1.0),
            'entropy': (entropy, ctx.hparams.entropy_weight)}


def _toy_preset(split):
    base = preset('mini_supervised', split)
    return dataclasses.replace(base, name='mini_toy', train=dataclasses.replace(base.train, method='toy_entmin'),
                               hparams=ToyParams())


@pytest.fixture(scope='module')
def toy():
    register_method(Method('toy_entmin', toy_losses, ToyParams, one_network, views=('labeled', 'unlabeled'),
                           nets=('net',), trained=(0,), label='Entropy min.'))
    register_preset('mini_toy', _toy_preset)
    yield get_method('toy_entmin')
    unregister_preset('mini_toy'); unregister_method('toy_entmin')      # tests remove what they register
    assert 'toy_entmin' not in method_names() + list(registered_methods()) and 'mini_toy' not in list_presets()


def test_a_taken_method_or_preset_name_is_refused_unless_forced():
    cps = get_method('cps')
    other = dataclasses.replace(cps, label='Not CPS')
    with pytest.raises(ValueError, match='force=True'): register_method(other)     # a built-in is not silently replaced
    assert get_method('cps') is cps and method_label('cps') == 'CPS'
    register_method(dataclasses.replace(cps))                                      # the same definition again: fine
    try:
        assert register_method(other, force=True) is other and method_label('cps') == 'Not CPS'
    finally: register_method(cps, force=True)
    assert get_method('cps') is cps
    with pytest.raises(ValueError, match='force=True'): register_preset('voc_cps', _toy_preset)
    register_preset('mini_toy2', _toy_preset)
    try:
        with pytest.raises(ValueError, match='force=True'): register_preset('mini_toy2', _toy_preset)
        register_preset('mini_toy2', _toy_preset, force=True)
        assert list_presets().count('mini_toy2') == 1
    finally: unregister_preset('mini_toy2')
    with pytest.raises(ValueError, match='register_preset'): unregister_preset('voc_cps')   # built-ins stay


def test_a_method_defined_in_a_test_file_trains_through_the_cli(toy, tmp_path):
    data = tmp_path / 'data'
    synthesize(data, layout='voc', n=32, n_val=4, seed=0, size=32, progress=False)
    assert cli_main(['train', '--preset', 'mini_toy', '--split', '1_4', '--data-root', str(data), '--out-dir',
                     str(tmp_path / 'runs'), '--no-progress', '--set', 'iters=2', 'batch_size=2', 'eval_every=2',
                     'checkpoint_every=2', 'log_every=1', 'eval.save_predictions=0']) == 0
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / 'runs').glob('*/result.json')]
    assert result['method'] == 'toy_entmin' and result['iters'] == 2 and 0 <= result['miou'] <= 100
    assert result['config']['hparams'] == {'entropy_weight': 0.1}
    rows = [json.loads(l) for l in next((tmp_path / 'runs').glob('*/metrics.jsonl')).read_text().splitlines()]
    assert {'loss/sup', 'loss/entropy'} <= set(rows[0])
    # the config round-trips with the toy method's hyperparameters
    cfg = ExperimentConfig.from_dict(result['config'])
    assert isinstance(cfg.hparams, ToyParams) and method_label('toy_entmin') == 'Entropy min.' and 'toy_entmin' not in paper_rows()


def test_hparams_are_checked_and_tied_to_the_method(toy):
    with pytest.raises(ValueError, match='hparams.entropy_weight=-1'):
        ExperimentConfig(train=TrainConfig(method='toy_entmin'), hparams=ToyParams(-1.0)).validate()
    with pytest.raises(ValueError, match="method 'cps'"):
        ExperimentConfig(train=TrainConfig(method='cps'), hparams=ToyParams()).validate()
    with pytest.raises(ValueError, match='register_method'):
        ExperimentConfig(train=TrainConfig(method='fixmatch')).validate()


def test_register_method_rejects_bad_views():
    with pytest.raises(ValueError, match='views'):
        register_method(Method('bad', toy_losses, ToyParams, one_network, views=('unlabeled',)))


def test_the_paper_rows_come_from_the_methods():
    from cps_repro.experiment import METHOD_ROW
    assert METHOD_ROW['cct'] == 'CCT' and METHOD_ROW['gct'] == 'GCT' and METHOD_ROW['cps_cutmix'] == 'CPS w/ CutMix'
