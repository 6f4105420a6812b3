"The full-label Cityscapes experiment: split 'full', coarse train_extra images as unlabeled data, presets, the notebook."
import json
import shutil
from pathlib import Path

import papermill as pm
import pytest
import torch

import cps_repro.data as data_mod
from cps_repro.config import normalize_split, ExperimentConfig
from cps_repro.partitions import COARSE_LIST_SIZES, coarse_list_file, full_split_lists
from cps_repro.overrides import apply_overrides
from cps_repro.presets import FULL_METHODS, list_presets, official_iters, preset
from cps_repro.data import (DataError, DataNotFoundError, SegmentationDataset, TrainTransform, cityscapes_extra_samples,
                            cityscapes_paths)
from cps_repro.partitions import city_entry, read_list, write_city_list
from cps_repro.synthetic import synthesize
from cps_repro.train import build_data
from cps_repro.loaders import resolve_lists

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
EXTRA_CITY = 'emden'


def add_train_extra(root, k: int = 2) -> list[str]:
    """Add 4k coarse train_extra images (copies of generated train images) and the three coarse lists, scaled down
    with the official structure: 3000 ⊂ 6000, 3000 ⊂ 9000, 6000 ∩ 9000 = 3000. No coarse label is written."""
    root = Path(root)
    train = sorted((root / 'leftImg8bit' / 'train').glob('*/*_leftImg8bit.png'))
    ids = [f'{EXTRA_CITY}_{i:06d}_000019' for i in range(4 * k)]
    for src, i in zip(train, ids):
        dst, _ = cityscapes_paths(root, 'train_extra', i)
        dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy(src, dst)
    lines = [city_entry('train_extra', i, 'gtCoarse') for i in ids]
    lists = {3000: lines[:k], 6000: lines[:2 * k], 9000: lines[:k] + lines[2 * k:]}
    for n, entries in lists.items():
        write_city_list(root / 'partitions' / coarse_list_file(n), entries)
    return ids


@pytest.fixture(scope='module')
def city_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('full') / 'city'
    synthesize(root, layout='cityscapes', n=24, n_val=2, seed=4, size=48, progress=False)
    add_train_extra(root, k=2)
    return root


# -- split names and presets ----------------------------------------------------------------------------------------

def test_full_is_a_split_name():
    assert normalize_split('full') == normalize_split(' FULL ') == 'full'
    with pytest.raises(ValueError) as e: normalize_split('fulll')
    assert 'full' in str(e.value) and '1_8' in str(e.value)


def test_full_is_refused_for_voc_with_the_valid_splits():
    with pytest.raises(ValueError, match='only for Cityscapes') as e:
        preset('voc_cps', 'full')
    assert '732' in str(e.value)
    switched = preset('voc_supervised', '1_8'); switched.data.split = 'full'   # a VOC preset switched to 'full'
    with pytest.raises(ValueError, match='needs data.labeled_list'): switched.validate()
    with pytest.raises(ValueError, match='cannot be overridden'):
        apply_overrides(preset('voc_supervised', '1_8'), ['split=full'])
    with pytest.raises(ValueError, match='only for Cityscapes'):
        official_iters('voc', 'full')


@pytest.mark.parametrize('backbone', ['hrnet_w48', 'resnet101', 'resnet50'])
def test_full_presets_hold_the_documented_choices(backbone):
    c = preset(f'cityscapes_cps_{backbone}', 'full')
    assert (c.data.split, c.model.backbone, c.train.method, c.hparams.weight) == ('full', backbone, 'cps', 6.0)
    assert c.train.iters == 44625 == 2975 * 240 // 16
    assert (c.train.batch_size, c.train.unlabeled_batch_size, c.data.crop_size, c.train.sup_loss) == (8, 8, 800, 'ohem')
    assert (c.eval.mode, c.eval.crop_size, c.eval.resolved_stride, c.eval.scales, c.eval.flip) == ('sliding', 800, 534, (1.0,), False)
    assert c.optim.resolved() == (0.0025, 8e-4, 1.0)
    assert (c.data.labeled_list, c.data.unlabeled_list, c.data.val_list) == (
        'city/config_new/train.txt', 'city/config_new/coarse_split/train_extra_3000.txt', 'city/config_new/val.txt')
    assert 'ASSUMED' in c.notes and '44625' in c.notes and 'recipe §8' in c.notes
    back = ExperimentConfig.from_json(c.to_json())
    assert back == c and back.run_id == c.run_id


def test_supervised_and_cutmix_presets():
    s = preset('cityscapes_supervised_hrnet_w48', 'full')
    assert not hasattr(s.hparams, 'weight') and s.data.unlabeled_list is None and s.train.iters == 44625
    assert preset('cityscapes_cps_cutmix_hrnet_w48', 'full').hparams.weight == 5.0
    names = set(list_presets())
    assert {f'cityscapes_{m}_hrnet_w48' for m in FULL_METHODS} <= names and 'voc_cps_hrnet_w48' not in names
    assert preset('cityscapes_supervised_hrnet_w48', '1_4').train.iters == 44640    # a Table 2 split with HRNet


def test_coarse_list_override_picks_the_official_list():
    base = preset('cityscapes_cps_hrnet_w48', 'full')
    for n in COARSE_LIST_SIZES:
        c = apply_overrides(base, [f'coarse_list={n}'])
        assert c.data.unlabeled_list == f'city/config_new/coarse_split/train_extra_{n}.txt'
        assert (c.run_id == base.run_id) == (n == 3000)
    assert apply_overrides(base, {'coarse_list': 9000}).train.iters == 44625     # iterations stay fixed
    for bad in ('5000', 'all', '0'):
        with pytest.raises(ValueError, match='3000, 6000, 9000'):
            apply_overrides(base, [f'coarse_list={bad}'])
    assert full_split_lists(6000)['unlabeled'].endswith('train_extra_6000.txt')


def test_full_split_without_lists_is_a_clear_error():
    c = preset('cityscapes_cps', '1_8')
    c.data.split = 'full'                                  # a Table-2 preset switched to 'full'
    with pytest.raises(ValueError, match=r"preset\('cityscapes_cps_hrnet_w48', 'full'\)"): c.validate()
    d = preset('cityscapes_cps_hrnet_w48', 'full').to_dict(); d['data']['unlabeled_list'] = None
    with pytest.raises(ValueError, match='coarse_list'):
        ExperimentConfig.from_dict(d)


# -- the coarse train_extra dataset ---------------------------------------------------------------------------------

def test_extra_samples_follow_the_official_lists(city_root):
    by_n = {n: [s.id for s in cityscapes_extra_samples(city_root, n)] for n in COARSE_LIST_SIZES}
    assert [len(by_n[n]) for n in COARSE_LIST_SIZES] == [2, 4, 6]
    assert set(by_n[3000]) <= set(by_n[6000]) and set(by_n[3000]) <= set(by_n[9000])
    assert set(by_n[6000]) & set(by_n[9000]) == set(by_n[3000])
    s = cityscapes_extra_samples(city_root)[0]
    assert s.label is None and s.image.parts[-3:] == ('train_extra', EXTRA_CITY, f'{s.id}_leftImg8bit.png')


def test_extra_images_are_read_without_touching_labels(city_root, monkeypatch):
    assert not list(city_root.rglob('*gtCoarse*'))                     # no coarse label exists at all
    def no_masks(path): raise AssertionError(f'a label was read: {path}')
    monkeypatch.setattr(data_mod, 'read_mask', no_masks)
    ds = SegmentationDataset(cityscapes_extra_samples(city_root, 9000), TrainTransform(32), num_classes=5)
    items = [ds[(i, 11 + i)] for i in range(len(ds))]
    assert all('label' not in it and it['image'].shape == (3, 32, 32) for it in items)


def test_extra_samples_refuse_non_extra_lists_and_name_the_prepare_step(city_root, tmp_path):
    with pytest.raises(DataError, match="'train' image, not a coarse train_extra one"):
        cityscapes_extra_samples(city_root, list_file='city/config_new/train.txt')
    bad = tmp_path / 'extra.txt'
    write_city_list(bad, [city_entry('train_extra', 'emden_999999_000019', 'gtCoarse')])
    with pytest.raises(DataNotFoundError, match='--extra') as e:
        cityscapes_extra_samples(city_root, list_file=bad)
    assert 'emden_999999_000019' in str(e.value)
    with pytest.raises(ValueError, match='3000, 6000, 9000'):
        cityscapes_extra_samples(city_root, 12000)


# -- the trainer's view ---------------------------------------------------------------------------------------------

def test_trainer_reads_every_label_and_the_coarse_images(city_root):
    cfg = preset('cityscapes_cps_resnet50', 'full', data_root=str(city_root), workers=0, batch_size=2, crop_size=32,
                 coarse_list=6000)
    lists = resolve_lists(cfg)
    assert [Path(lists[k]).name for k in ('labeled', 'unlabeled', 'val')] == ['train.txt', 'train_extra_6000.txt', 'val.txt']
    d = build_data(cfg)
    assert (d.n_labeled, d.n_unlabeled) == (24, 4) and d.n_labeled == len(read_list(city_root / 'partitions/city/config_new/train.txt'))
    batch = next(d.unlabeled)
    assert 'label' not in batch and all(i.startswith(EXTRA_CITY) for i in batch['id'])
    sup = build_data(preset('cityscapes_supervised_resnet50', 'full', data_root=str(city_root), workers=0, batch_size=2, crop_size=32))
    assert (sup.n_labeled, sup.n_unlabeled, sup.unlabeled) == (24, 0, None)


# -- the notebook ---------------------------------------------------------------------------------------------------

def _run(tmp_path, **params):
    "The notebook at tiny size: random init (`pretrained='none'`), allowed on CPU, a small evaluation window."
    params = {'pretrained': 'none', 'allow_cpu': True, 'eval_crop_size': 32, **params}
    out = tmp_path / 'exp_cityscapes_full.out.ipynb'
    pm.execute_notebook(str(REPO / 'nbs' / 'exp_cityscapes_full.ipynb'), str(out), parameters=params,
                        kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    return out


@pytest.mark.slow
def test_notebook_trains_hrnet_cps_on_every_label_plus_coarse_images(city_root, tmp_path):
    _run(tmp_path, data_root=str(city_root), out_dir=str(tmp_path / 'results'), coarse_list=6000,
         iters=1, batch_size=2, crop_size=32, workers=0, extra=['eval_every=1', 'checkpoint_every=1'])
    (path,) = (tmp_path / 'results').glob('*/result.json')
    r = json.loads(path.read_text())
    assert (r['dataset'], r['split'], r['method'], r['backbone'], r['iters']) == ('cityscapes', 'full', 'cps', 'hrnet_w48', 1)
    assert (r['n_labeled'], r['n_unlabeled']) == (24, 4) and 0 <= r['miou'] <= 100
    assert r['eval']['mode'] == 'sliding' and r['config']['train']['sup_loss'] == 'ohem'
    assert r['config']['data']['unlabeled_list'].endswith('train_extra_6000.txt')
    assert 'ASSUMED' in r['config']['notes']                           # the closest-documented-value choices


def test_notebook_stops_when_the_train_extra_images_are_missing(tmp_path):
    root = tmp_path / 'city'
    synthesize(root, layout='cityscapes', n=8, n_val=1, seed=5, size=32, progress=False)
    write_city_list(root / 'partitions' / coarse_list_file(3000), [city_entry('train_extra', 'emden_000000_000019', 'gtCoarse')])
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run(tmp_path, data_root=str(root), out_dir=str(tmp_path / 'results'))
    assert 'prepare_cityscapes.py' in str(e.value) and '--extra' in str(e.value)
    assert not (tmp_path / 'results').exists()


def test_notebook_stops_when_cityscapes_is_missing(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run(tmp_path, data_root=str(tmp_path / 'no_data'), out_dir=str(tmp_path / 'results'), smoke=True)   # a paper-size
    assert 'data_scripts/prepare_cityscapes.py' in str(e.value)   # step would not fit a CPU machine's memory (issue 26)
