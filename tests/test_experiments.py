"The experiment notebooks run end to end through papermill on generated data at tiny sizes."
import json
from pathlib import Path

import papermill as pm
import pytest

from cps_repro.synthetic import synthesize

REPO = Path(__file__).resolve().parents[1]
TINY0 = dict(iters=2, batch_size=2, crop_size=32, eval_crop_size=48, workers=0, extra=['eval_every=2', 'checkpoint_every=2'])


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    "A resnet50 backbone file in the format `pretrained=` loads (random values: the plumbing, not the numbers)."
    from cps_repro.models import build_backbone, save_backbone
    return str(save_backbone(build_backbone('resnet50'), tmp_path_factory.mktemp('w') / 'resnet50_v1c.pth'))


@pytest.fixture(scope='module')
def TINY(weights):
    return {**TINY0, 'pretrained': weights}


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('exp') / 'voc'
    synthesize(root, layout='voc', n=48, n_val=4, seed=1, size=40, progress=False)
    return root


@pytest.fixture(scope='module')
def city_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('exp') / 'city'
    synthesize(root, layout='cityscapes', n=48, n_val=2, seed=2, size=48, progress=False)
    return root


def _run(name, tmp_path, **params):
    out = tmp_path / f'{name}.out.ipynb'
    pm.execute_notebook(str(REPO / 'nbs' / f'{name}.ipynb'), str(out), parameters=params, kernel_name='python3',
                        progress_bar=False, cwd=str(tmp_path))
    return out


def _results(out_dir):
    return [json.loads(p.read_text()) for p in Path(out_dir).glob('*/result.json')]


def test_exp_voc_runs_the_1_8_partition_from_papermills_integer(voc_root, tmp_path, TINY):
    # `-p split 1_8` arrives as the integer 18
    _run('exp_voc', tmp_path, data_root=str(voc_root), out_dir=str(tmp_path / 'results'), split=18, method='cps', **TINY)
    (r,) = _results(tmp_path / 'results')
    assert (r['dataset'], r['split'], r['method'], r['backbone'], r['iters']) == ('voc', '1_8', 'cps', 'resnet50', 2)
    assert r['n_labeled'] == 6 and r['n_labeled'] + r['n_unlabeled'] == 48 and 0 <= r['miou'] <= 100
    assert r['config']['eval']['crop_size'] == 48 and r['config']['data']['crop_size'] == 32   # separate keys


def test_exp_cityscapes_runs_on_a_generated_cityscapes_folder(city_root, tmp_path, TINY):
    _run('exp_cityscapes', tmp_path, data_root=str(city_root), out_dir=str(tmp_path / 'results'), split='1_4',
         method='cps_cutmix', **TINY)
    (r,) = _results(tmp_path / 'results')
    assert (r['dataset'], r['split'], r['method'], r['eval']['mode']) == ('cityscapes', '1_4', 'cps_cutmix', 'sliding')
    assert r['config']['train']['sup_loss'] == 'ohem'


def test_exp_voc_few_uses_all_train_aug_as_unlabeled(voc_root, tmp_path, TINY):
    _run('exp_voc_few', tmp_path, data_root=str(voc_root), out_dir=str(tmp_path / 'results'), split=732, **TINY)
    (r,) = _results(tmp_path / 'results')
    assert r['split'] == '732' and r['n_unlabeled'] == 48 and r['config']['hparams']['weight'] == 0.1


def test_exp_self_training_runs_both_stages_and_cps(voc_root, tmp_path, TINY):
    _run('exp_self_training', tmp_path, data_root=str(voc_root), out_dir=str(tmp_path / 'results'), split='1_4',
         cps_methods=['cps'], **TINY)
    by_method = {r['method']: r for r in _results(tmp_path / 'results')}
    assert set(by_method) == {'supervised', 'self_training', 'cps'}
    assert by_method['cps']['iters'] == 2 * by_method['self_training']['iters'] == 4


@pytest.mark.parametrize('name,dataset', [('exp_voc', 'voc'), ('exp_cityscapes', 'cityscapes'), ('exp_voc_few', 'voc')])
def test_missing_dataset_stops_with_the_prepare_command(tmp_path, name, dataset, weights):
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run(name, tmp_path, data_root=str(tmp_path / 'no_data'), out_dir=str(tmp_path / 'results'), pretrained=weights,
             allow_cpu=True, smoke=True)   # smoke: a paper-size step would not fit this machine's memory (issue 26)
    assert f'data_scripts/prepare_{dataset}.py' in str(e.value)
    assert not (tmp_path / 'results').exists()


# ---- a user's first hour (issue 12) -------------------------------------------------------------------------------
def test_literal_papermill_command_without_weights_stops_in_seconds(tmp_path):
    "`papermill nbs/exp_voc.ipynb OUT -p split 1_8` with no weights stops naming the file (before any data is read)."
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run('exp_voc', tmp_path, split=18)
    assert 'weights/resnet50_v1c.pth' in str(e.value) and 'Preparing the data' in str(e.value)


def test_paper_scale_on_a_cpu_points_to_the_mini_notebook(tmp_path):
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run('exp_voc', tmp_path, split=18, pretrained='none')
    assert 'exp_mini' in str(e.value) and 'allow_cpu' in str(e.value)


@pytest.mark.parametrize('param,value,msg', [('method', 'x', 'Unknown method'), ('backbone', 'resnet18', 'Unknown backbone')])
def test_unknown_method_or_backbone_is_named(tmp_path, param, value, msg):
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run('exp_voc', tmp_path, **{param: value})
    assert msg in str(e.value) and 'Unknown preset' not in str(e.value)


def test_relative_paths_resolve_from_the_project_root_when_run_from_nbs(tmp_path, weights):
    "Jupyter runs a notebook in nbs/: `data_root='data/...'` still means the folder at the repository root."
    out = tmp_path / 'o.ipynb'
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(REPO / 'nbs' / 'exp_voc.ipynb'), str(out), kernel_name='python3', progress_bar=False,
                            cwd=str(REPO / 'nbs'), parameters=dict(data_root='data/no_such_dataset_here', pretrained=weights,
                                                                    allow_cpu=True, smoke=True))
    assert str(REPO / 'data' / 'no_such_dataset_here') in str(e.value) and '/nbs/data' not in str(e.value)


def test_parameters_cells_are_all_visible_to_papermill():
    "`papermill --help-notebook` lists every parameter (a comment with '=' used to hide `extra`)."
    import ast
    from papermill.translators import PythonTranslator
    for nb in sorted((REPO / 'nbs').glob('exp_*.ipynb')) + [REPO / 'nbs' / 'paper_tables.ipynb', REPO / 'nbs' / 'paper_figures.ipynb']:
        cell = next(c for c in json.loads(nb.read_text())['cells'] if 'parameters' in c['metadata'].get('tags', []))
        src = ''.join(cell['source'])
        names = [t.id for n in ast.parse(src).body if isinstance(n, ast.Assign) for t in n.targets]
        assert [p.name for p in PythonTranslator.inspect({'source': src})] == names, nb.name


# ---- issue 26: nothing silently wrong in the experiment notebooks -------------------------------------------------
def test_a_generated_data_run_is_not_compared_with_the_paper(voc_root, weights):
    from cps_repro.experiment import experiment_config, describe, result_summary
    cfg = experiment_config('voc', '1_8', 'cps', 'resnet50', str(voc_root), pretrained=weights, iters=2)
    assert 'generated data' in describe(cfg) and '73.' not in describe(cfg)
    res = {'run_id': cfg.run_id, 'method': 'cps', 'backbone': 'resnet50', 'split': '1_8', 'n_labeled': 6, 'iters': 2,
           'miou': 3.0, 'best_miou': 3.0, 'wall_seconds': 1.0, 'data': {'provenance': 'generated'}, 'config': cfg.to_dict()}
    row = result_summary(res, cfg).iloc[0]
    assert row['mIoU (paper)'] == 'generated data' and row['Δ'] is None


def test_allow_cpu_no_is_false_and_other_text_is_refused(tmp_path):
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run('exp_voc', tmp_path, split=18, pretrained='none', allow_cpu='no')
    assert 'exp_mini' in str(e.value) and 'allow_cpu' in str(e.value)     # preflight stopped it: 'no' is False
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run('exp_mini', tmp_path, full_ceiling='maybe', out_dir=str(tmp_path / 'm'))
    assert 'full_ceiling' in str(e.value) and 'maybe' in str(e.value)


@pytest.mark.parametrize('name, param, value', [('exp_voc', 'gpus', 'two'), ('exp_mini', 'data_seed', 'abc')])
def test_integer_parameters_that_are_not_integers_are_named(tmp_path, name, param, value):
    "Issue 26: `-p gpus two` and `-p data_seed abc` ended in a bare int() traceback (or were carried on as text)."
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run(name, tmp_path, **{param: value, 'out_dir': str(tmp_path / 'o')})
    assert e.value.ename == 'ValueError' and f'{param}={value}: expected an integer' in e.value.evalue
    assert not (tmp_path / 'o').exists()


def test_a_parameter_and_extra_setting_one_key_is_an_error(voc_root, weights):
    from cps_repro.experiment import experiment_config
    with pytest.raises(ValueError, match='set twice'):
        experiment_config('voc', '1_8', 'cps', 'resnet50', str(voc_root), pretrained=weights, iters=2, extra=['iters=3'])
    with pytest.raises(ValueError, match='set twice'):
        experiment_config('voc', '1_8', 'cps', 'resnet50', str(voc_root), pretrained=weights, extra='train.iters=3 iters=4')


def test_smoke_makes_crop_batch_and_iterations_tiny_at_once(voc_root, weights):
    from cps_repro.experiment import experiment_config, SMOKE
    cfg = experiment_config('voc', '1_8', 'cps', 'resnet50', str(voc_root), pretrained=weights, smoke=True)
    assert cfg.train.iters == SMOKE['iters'] and cfg.data.crop_size == SMOKE['crop_size'] <= 64
    assert cfg.train.batch_size == cfg.train.unlabeled_batch_size == SMOKE['batch_size'] <= 2
    assert experiment_config('voc', '1_8', 'cps', 'resnet50', str(voc_root), pretrained=weights, smoke=True,
                             iters=3).train.iters == 3        # an explicit parameter wins over the smoke size
    with pytest.raises(ValueError, match='smoke'): experiment_config('voc', '1_8', smoke='perhaps')


def test_smoke_runs_the_notebook_end_to_end(voc_root, tmp_path, weights):
    _run('exp_voc', tmp_path, data_root=str(voc_root), out_dir=str(tmp_path / 'results'), pretrained=weights, smoke='yes',
         method='supervised')
    (r,) = _results(tmp_path / 'results')
    assert r['iters'] <= 2 and r['config']['data']['crop_size'] <= 64


def test_a_paper_size_cpu_run_states_its_memory_before_it_starts(tmp_path):
    from cps_repro.experiment import estimate_memory_gib
    from cps_repro.presets import preset
    big, small = estimate_memory_gib(preset('voc_cps_cutmix', '1_8')), estimate_memory_gib(preset('mini_cps', '1_8'))
    assert big > 10 > small > 0
    out = tmp_path / 'o.ipynb'
    with pytest.raises(pm.PapermillExecutionError):
        pm.execute_notebook(str(REPO / 'nbs' / 'exp_voc.ipynb'), str(out), kernel_name='python3', progress_bar=False,
                            cwd=str(tmp_path), parameters=dict(split=18, pretrained='none', allow_cpu=True,
                                                                data_root=str(tmp_path / 'none')))
    text = out.read_text()
    assert 'GiB of memory' in text


def test_describe_says_the_configs_schedule_and_evaluation():
    "Issue 27: describe() always printed 'poly 0.9' and 'single scale, no flip', whatever the config said."
    from cps_repro.experiment import describe
    from cps_repro.overrides import apply_overrides
    from cps_repro.presets import preset
    plain = describe(preset('mini_cps', '1_8'))
    assert 'poly 0.9' in plain and 'single scale, no flip' in plain
    cfg = apply_overrides(preset('mini_cps', '1_8'), ['optim.power=1.0', 'eval.flip=true', 'eval.scales=0.75,1.0'])
    text = describe(cfg)
    assert '(poly 1)' in text and 'scales [0.75, 1.0], flip;' in text and 'single scale' not in text, text
