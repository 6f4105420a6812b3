import json
import pytest
from cps_repro.config import ExperimentConfig, normalize_split, TRAIN_AUG_SPLITS, FEW_LABEL_SPLITS, OptimConfig
from cps_repro.overrides import apply_overrides
from cps_repro.presets import preset, list_presets, official_iters


@pytest.mark.parametrize('raw,canon', [(18, '1_8'), ('1_8', '1_8'), ('1-8', '1_8'), ('1/8', '1_8'), ('18', '1_8'),
                                       (116, '1_16'), ('1/16', '1_16'), (14, '1_4'), (12, '1_2'), ('1-2', '1_2'),
                                       (92, '92'), ('183', '183'), (366, '366'), ('732', '732')])
def test_normalize_split_accepts_every_spelling(raw, canon):
    assert normalize_split(raw) == canon


@pytest.mark.parametrize('bad', ['1_3', 8, '', None, 1.25, 'half', 1464, '1_32', True])
def test_normalize_split_rejects_unknown_with_the_valid_list(bad):
    with pytest.raises(ValueError) as e: normalize_split(bad)
    for s in TRAIN_AUG_SPLITS + FEW_LABEL_SPLITS: assert s in str(e.value)


def test_json_round_trip_of_every_preset(tmp_path):
    for name in list_presets():
        cfg = preset(name, '1_4')
        path = tmp_path / f'{name}.json'
        cfg.to_json(path)
        back = ExperimentConfig.from_json(path)
        assert back == cfg and back.run_id == cfg.run_id
        assert isinstance(back.data.scales, tuple)


def test_paper_numbers_in_presets():
    voc = preset('voc_cps', '1_16')
    assert (voc.data.crop_size, voc.data.num_classes, voc.train.batch_size, voc.train.unlabeled_batch_size) == (512, 21, 8, 8)
    assert voc.data.scales == (0.5, 0.75, 1.0, 1.5, 1.75, 2.0)
    assert (voc.hparams.weight, voc.train.sup_loss, voc.train.iters) == (1.5, 'ce', 39680)
    assert voc.optim.resolved() == (0.0025, 4e-4, 1.0) and voc.optim.momentum == 0.9 and voc.optim.power == 0.9
    city = preset('cityscapes_cps_cutmix_resnet101', '1_2')
    assert (city.data.crop_size, city.data.num_classes, city.hparams.weight, city.train.sup_loss) == (800, 19, 5.0, 'ohem')
    assert city.optim.resolved() == (0.0025, 8e-4, 1.0)
    assert city.optim.nominal_lr == 0.02 and city.optim.gpus_official == 8
    assert (city.eval.mode, city.eval.crop_size, city.eval.resolved_stride) == ('sliding', 800, 534)
    assert city.train.iters == 44640 and city.model.backbone == 'resnet101'
    few = preset('voc_cps_cutmix', '366')
    assert few.hparams.weight == 0.1 and few.data.unlabeled_from_train_aug and few.train.iters == 39660


def test_nominal_mode_is_the_same_run_written_differently():
    lr, wd, scale = OptimConfig(lr_mode='nominal', nominal_lr=0.02, gpus_official=8).resolved()
    lr_e, wd_e, scale_e = preset('cityscapes_cps', '1_8').optim.resolved()
    assert scale_e == 1.0 and lr * scale == pytest.approx(lr_e) and wd / scale == pytest.approx(wd_e)


def test_official_iteration_table():
    assert [official_iters('voc', s) for s in TRAIN_AUG_SPLITS] == [39680, 39338, 39680, 39660]
    assert [official_iters('cityscapes', s) for s in TRAIN_AUG_SPLITS] == [44544, 44525, 44640, 44640]
    with pytest.raises(ValueError): official_iters('cityscapes', '92')


def test_unknown_preset_and_keys_are_clear_errors():
    with pytest.raises(ValueError, match='voc_cps_cutmix_resnet101'): preset('voc_fixmatch')
    with pytest.raises(ValueError, match='Cityscapes splits'): preset('cityscapes_cps', '92')
    with pytest.raises(KeyError, match='iterz'): apply_overrides(preset('mini_cps'), ['iterz=1'])
    with pytest.raises(ValueError, match='key=value'): apply_overrides(preset('mini_cps'), ['iters'])
    with pytest.raises(ValueError, match='accum_steps'): apply_overrides(preset('mini_cps'), ['accum_steps=3'])
    with pytest.raises(ValueError, match='boolean'): apply_overrides(preset('mini_cps'), ['channels_last=maybe'])


def test_run_id_changes_with_the_config_and_the_data_but_not_with_the_worker_count():
    a = preset('mini_cps', '1_16')
    assert apply_overrides(a, ['workers=3']).run_id == a.run_id
    assert apply_overrides(a, ['data_root=/elsewhere']).run_id != a.run_id     # other data: another run (issue 12)
    assert apply_overrides(a, ['iters=10']).run_id != a.run_id
    assert apply_overrides(a, ['seed=1']).run_id != a.run_id


# ---- issue 26: a run is its data, not its path nor its prose ------------------------------------------------------
@pytest.fixture(scope='module')
def small_data(tmp_path_factory):
    from cps_repro.synthetic import synthesize
    root = tmp_path_factory.mktemp('id') / 'a'
    synthesize(root, layout='voc', n=32, n_val=4, seed=5, size=24, progress=False)
    return root


def test_run_id_is_the_datas_fingerprint_not_its_path_and_not_the_notes(small_data, tmp_path):
    import shutil
    from dataclasses import replace
    from cps_repro.partitions import split_files
    moved = tmp_path / 'moved'; shutil.copytree(small_data, moved)
    a = apply_overrides(preset('mini_cps', '1_4'), [f'data_root={small_data}'])
    b = apply_overrides(preset('mini_cps', '1_4'), [f'data_root={moved}'])
    assert a.run_id == b.run_id                                           # the same data at another path: the same run
    assert replace(a, notes=a.notes.replace('214k', '215k') + ' (typo fixed)').run_id == a.run_id   # prose is no identity
    lab = split_files('voc', '1_4', moved / 'partitions')['labeled']
    ids = lab.read_text().split()
    lab.write_text('\n'.join(ids[:-1]) + '\n')                            # one labeled id less: other data
    assert apply_overrides(preset('mini_cps', '1_4'), [f'data_root={moved}']).run_id != a.run_id
    shutil.rmtree(moved); shutil.copytree(small_data, moved)
    assert apply_overrides(preset('mini_cps', '1_4'), [f'data_root={moved}']).run_id == a.run_id
    img = next((moved / 'VOCdevkit' / 'VOC2012' / 'JPEGImages').iterdir())
    img.write_bytes(img.read_bytes() + b'\0' * 7)                        # an image replaced by another file: other data
    assert apply_overrides(preset('mini_cps', '1_4'), [f'data_root={moved}']).run_id != a.run_id


def test_config_differences_name_the_dotted_keys():
    from cps_repro.config import config_differences
    a, b = preset('mini_cps', '1_8'), preset('mini_supervised', '1_8')
    diff = config_differences(a.to_dict(), apply_overrides(a, ['iters=5', 'workers=1']).to_dict())
    assert diff == ['data.workers', 'train.iters'] and config_differences(a.to_dict(), a.to_dict()) == []
    assert {'name', 'train.method'} <= set(config_differences(a.to_dict(), b.to_dict()))


def test_committed_runs_carry_the_ids_of_their_config_and_data_and_the_migration_reproduces_them(small_data, tmp_path):
    "Issue 26 item 3: the committed results were renamed by tools/migrate_run_ids.py; the tool gives a run its id."
    import importlib.util, json, shutil
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    for p in (repo / 'nbs' / 'mini_results' / 'data_seed0' / 'run_results').glob('*/result.json'):
        r = json.loads(p.read_text())
        assert r['run_id'] == p.parent.name and r['migrated_from']['run_id'] != r['run_id'] and r['data']['lists']
    spec = importlib.util.spec_from_file_location('migrate_run_ids', repo / 'tools' / 'migrate_run_ids.py')
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    cfg = apply_overrides(preset('mini_cps', '1_4'), [f'data_root={small_data}'])
    old = cfg.to_dict(); old['data']['root'] = 'data/somewhere_else'; old['notes'] = 'the notes of the time'
    run = tmp_path / 'results' / 'mini_cps_1_4_seed0_0ldsch3m'; run.mkdir(parents=True)
    lists = {k: {'path': 'x', 'sha256': v} for k, v in tool._list_shas(cfg).items()}
    (run / 'result.json').write_text(json.dumps({'run_id': run.name, 'method': 'cps', 'config': old,
                                                 'data': {'fingerprint': 'old', 'lists': lists}}))
    writes, mapping, skipped = tool.migrate_results(tmp_path / 'results', [tmp_path / 'nowhere', small_data])
    assert not skipped and mapping == {run.name: cfg.run_id}
    (new,) = writes.values()
    from cps_repro.config import run_data
    assert new['run_id'] == cfg.run_id and new['data']['fingerprint'] == run_data(cfg)['fingerprint']
    assert new['migrated_from']['run_id'] == run.name and new['config']['data']['root'] == 'data/somewhere_else'
