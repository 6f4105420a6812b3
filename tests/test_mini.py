"The CPU mini recipe: presets, the committed pretrained backbone, pretraining, the table helpers and exp_mini.ipynb."
import json
from pathlib import Path

import pytest
import torch

from cps_repro import mini
from cps_repro.presets import preset
from cps_repro.config import normalize_split
from cps_repro.mini import (MINI_BACKBONE, MINI_DEVIATIONS, MINI_N_TRAIN, MINI_WEIGHTS, PretrainConfig, as_list, ensure_dataset, mini_job, mini_jobs,
                            mini_preset, pretrain_backbone, results_table, summarize,
                            summary_markdown, run_jobs, check_targets, targets_markdown, history_table, export_results,
                            paired_gains)
from cps_repro.models import deeplabv3plus
from cps_repro.packaged import resolve_asset

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.mark.parametrize('method,lam,ramp,balance', [('supervised', 0.0, 0, 0), ('cps', 1.5, 0.4, 0.5), ('cps_cutmix', 1.5, 0.2, 0.5)])
def test_mini_preset_is_the_documented_recipe(method, lam, ramp, balance):
    c = mini_preset(method, '1/16')
    assert (c.data.split, c.data.crop_size, c.data.num_classes, c.data.scales) == ('1_16', 32, 5, (1.0,))
    assert (c.train.iters, c.train.batch_size, c.train.unlabeled_batch_size, getattr(c.hparams, 'weight', 0.0)) == (3000, 8, 8, lam)
    assert getattr(c.hparams, 'mask', 'half') == 'half' and getattr(c.hparams, 'rampup', 0) == ramp
    assert getattr(c.hparams, 'balance', 0) == balance and MINI_N_TRAIN == 8000      # 1/16 = 500 labeled images
    assert (c.optim.resolved(), c.model.backbone, c.model.output_stride) == ((0.02, 1e-4, 1.0), MINI_BACKBONE, 4)
    assert resolve_asset(c.model.pretrained) == MINI_WEIGHTS and c.model.pretrained.startswith('asset:')
    assert preset(f'mini_{method}', 18).to_dict() == mini_preset(method, '1_8').to_dict()   # papermill's 18 = 1_8
    for key in ('data', 'network', 'pretraining', 'schedule', 'cutmix', 'pseudo-label balance', 'λ ramp-up'):
        assert key in MINI_DEVIATIONS and key in c.notes


def test_mini_preset_rejects_unknown_method_and_split():
    with pytest.raises(ValueError, match='fixmatch'): mini_preset('fixmatch', '1_8')
    with pytest.raises(ValueError, match='1_16'): mini_preset('cps', '1_3')


def test_committed_weights_load_strictly_and_match_their_record():
    info = json.loads(MINI_WEIGHTS.with_suffix('.json').read_text())
    assert info['file_sha256'] == mini.file_sha256(MINI_WEIGHTS) and info['weights_sha256'] == mini.weights_sha256(MINI_WEIGHTS)
    assert MINI_WEIGHTS.stat().st_size < 2_000_000
    assert info['pretrain_config'] == json.loads(json.dumps(PretrainConfig().__dict__))   # made by the defaults
    assert info['pretrain_config']['vocabulary'] == 'pretrain' and info['corpus_miou'] > 30
    net = deeplabv3plus(MINI_BACKBONE, 5, output_stride=4, pretrained=MINI_WEIGHTS)
    fresh = deeplabv3plus(MINI_BACKBONE, 5, output_stride=4, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(net.backbone.conv1[0].weight, fresh.backbone.conv1[0].weight)


def test_pretrain_backbone_writes_a_loadable_backbone_from_a_disjoint_corpus(tmp_path):
    pc = PretrainConfig(n=16, n_val=2, iters=2, batch_size=4)
    info = pretrain_backbone(tmp_path / 'w.pt', tmp_path / 'work', pc, progress=False)
    meta = json.loads((tmp_path / 'work' / 'corpus' / 'synthetic.json').read_text())
    assert meta['seed'] == 1000 and not set(meta['class_names'][1:]) & {'stripes', 'checker', 'dots', 'solid'}
    assert json.loads((tmp_path / 'w.json').read_text())['weights_sha256'] == info['weights_sha256'] == mini.weights_sha256(tmp_path / 'w.pt')
    deeplabv3plus(MINI_BACKBONE, 5, output_stride=4, pretrained=tmp_path / 'w.pt')
    pretrain_backbone(tmp_path / 'again' / 'w.pt', tmp_path / 'work', pc, progress=False)   # finished run: same weights
    first, again = torch.load(tmp_path / 'w.pt'), torch.load(tmp_path / 'again' / 'w.pt')
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert mini.weights_sha256(tmp_path / 'again' / 'w.pt') == info['weights_sha256']
    first['conv1.0.weight'][0, 0, 0, 0] += 1e-6; torch.save(first, tmp_path / 'changed.pt')
    assert mini.weights_sha256(tmp_path / 'changed.pt') != info['weights_sha256']
    with pytest.raises(ValueError, match="'pretrain'"):
        pretrain_backbone(tmp_path / 'x.pt', tmp_path / 'w3', PretrainConfig(vocabulary='target'), progress=False)


def test_ensure_dataset_refuses_a_folder_made_with_other_settings(tmp_path):
    ensure_dataset(tmp_path / 'd', seed=3, n=8, n_val=2)
    assert ensure_dataset(tmp_path / 'd', seed=3, n=8) == tmp_path / 'd'       # same settings: reused
    with pytest.raises(FileExistsError, match='synthetic.json'): ensure_dataset(tmp_path / 'd', seed=4, n=8)
    with pytest.raises(FileExistsError, match='synthetic.json'): ensure_dataset(tmp_path / 'd', seed=3, n=8, vocabulary='pretrain')
    with pytest.raises(FileExistsError, match="'val': 5"): ensure_dataset(tmp_path / 'd', seed=3, n=8, n_val=5)   # other validation count
    assert ensure_dataset(tmp_path / 'd', seed=3, n=8, n_val=2) == tmp_path / 'd'


def test_ensure_dataset_workers_render_the_same_files(tmp_path):
    one, two = ensure_dataset(tmp_path / 'w1', seed=2, n=6, n_val=2), ensure_dataset(tmp_path / 'w2', seed=2, n=6, n_val=2, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob('*') if p.is_file() and p.name != 'synthetic.json')
    assert files and files == sorted(p.relative_to(two) for p in two.rglob('*') if p.is_file() and p.name != 'synthetic.json')
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)


def test_jobs_cover_the_table_and_the_full_label_ceiling(tmp_path):
    jobs = mini_jobs(['supervised', 'cps', 'cps_cutmix'], '1_16,1_8', [0, 1], tmp_path / 'd', tmp_path / 'o', iters=5)
    assert len(jobs) == 3 * 2 * 2 + 2 and jobs[0].method == 'cps_cutmix' and jobs[-1].method == 'supervised'
    full = [j for j in jobs if j.split == 'full']
    assert {j.seed for j in full} == {0, 1}
    assert all(j.cfg.data.labeled_list == 'VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt' and j.cfg.data.split == 'full' for j in full)
    assert len({j.cfg.run_id for j in jobs}) == len(jobs)
    assert all(j.cfg.train.iters == 5 and j.cfg.data.root == str(tmp_path / 'd') for j in jobs)
    assert len(mini_jobs('cps', '1_16', 0, 'd', 'o', full_ceiling=False)) == 1
    with pytest.raises(ValueError, match='ceiling'): mini_job('cps', 'full', 0, 'd', 'o')
    with pytest.raises(ValueError, match='full'): normalize_split('1_3')
    with pytest.raises(ValueError, match='Seeds'): mini_jobs('cps', '1_16', [-1], 'd', 'o')
    with pytest.raises(ValueError, match='Empty'): as_list('')


def test_papermill_style_values_become_lists():
    assert as_list(116, normalize_split) == ['1_16'] and as_list("['1_8', 'full']", normalize_split) == ['1_8', 'full']
    assert as_list('0,1', mini._seed) == [0, 1] and as_list(0) == [0] and as_list((1, 2)) == [1, 2] and as_list('cps, supervised') == ['cps', 'supervised']


def test_summary_pairs_the_gain_by_seed(tmp_path):
    jobs = mini_jobs(['supervised', 'cps'], '1_16', [0, 1], 'd', 'o', full_ceiling=False)
    by = {(j.method, j.seed): j for j in jobs}
    order = [by[k] for k in [('supervised', 0), ('supervised', 1), ('cps', 0), ('cps', 1)]]
    res = [dict(miou=m, n_labeled=1, n_unlabeled=1, iters=1, wall_seconds=1, run_id=j.cfg.run_id) for j, m in zip(order, [40, 44, 43, 46])]
    table = results_table(order, res, data_seed=0)
    assert list(table.columns[:4]) == ['method', 'split', 'seed', 'miou'] and list(table.method) == ['supervised'] * 2 + ['cps'] * 2
    s = summarize(table).set_index('method')
    assert s.loc['cps', 'gain_vs_supervised'] == pytest.approx(2.5) and s.loc['cps', 'gain_std'] == pytest.approx(0.7071, abs=1e-3)
    assert s.loc['supervised', 'miou_mean'] == 42
    md = summary_markdown(table).splitlines()
    assert md[0].startswith('| labels | method |') and len(md) == 4
    assert md[3] == '| 1/16 (1) | CPS w/o CutMix | 2 | 44.50 ± 2.12 | +2.50 ± 0.71 | 1 |' and md[2].startswith('| 1/16 (1) | Supervised | 2 | 42.00 ± 2.83 |  |')
    one = summary_markdown(table[table.seed == 0]).splitlines()
    assert one[3] == '| 1/16 (1) | CPS w/o CutMix | 1 | 43.00 | +3.00 | 1 |'   # one seed: no sd


def test_self_training_is_taught_by_the_supervised_run_of_its_split_and_seed(tmp_path):
    jobs = mini_jobs(['supervised', 'cps'], '1_16', [0, 1], 'd', tmp_path / 'o', iters=5, full_ceiling=False, self_training='1_8')
    st = [j for j in jobs if j.method == 'self_training']
    assert {(j.split, j.seed) for j in st} == {('1_8', 0), ('1_8', 1)}
    for j in st:
        (teacher,) = [t for t in jobs if (t.method, t.split, t.seed) == ('supervised', j.split, j.seed)]
        assert j.needs == (teacher.cfg.run_id,) and j.cfg.model.teacher_checkpoint == str(teacher.run_dir / 'checkpoint.pt')
        assert jobs.index(teacher) < jobs.index(j)        # a teacher starts before the runs that wait for it
    assert len({j.cfg.run_id for j in jobs}) == len(jobs) == 2 * 2 + 2 * 2
    with pytest.raises(ValueError, match='unlabeled'): mini_jobs('cps', '1_16', 0, 'd', 'o', self_training='full')


def test_run_jobs_starts_a_run_only_after_the_runs_it_needs(tmp_path, monkeypatch):
    import threading, time
    jobs = mini_jobs('supervised', '1_16', [0, 1], 'd', tmp_path / 'o', iters=5, full_ceiling=False, self_training='1_16')
    done, lock = set(), threading.Lock()
    def fake(job, log_dir=None):
        with lock: assert set(job.needs) <= done, f"{job.cfg.run_id} started before {job.needs}"
        time.sleep(0.05 if job.method == 'supervised' else 0.0)
        with lock: done.add(job.cfg.run_id)
        return dict(miou=1.0, wall_seconds=0.0)
    monkeypatch.setattr(mini, 'run_job', fake)
    results = run_jobs(jobs, workers=2, progress=None)
    assert len(done) == len(jobs) == 4 and all(r['miou'] == 1.0 for r in results)
    with pytest.raises(ValueError, match='not in the job list'):
        run_jobs([j for j in jobs if j.method == 'self_training'], progress=None)


def _table(rows):
    import pandas as pd
    return pd.DataFrame([dict(method=m, split=s, seed=k, miou=v) for m, s, k, v in rows])


def test_check_targets_measures_each_claim_and_says_what_is_missing():
    import pandas as pd
    good = _table([(m, s, k, base + extra + 0.1 * k) for s, base, gains in
                   [('1_16', 30, (0, 2.5, 4.0)), ('1_8', 34, (0, 2.0, 3.0)), ('1_4', 37, (0, 1.0, 1.5))]
                   for m, extra in zip(('supervised', 'cps', 'cps_cutmix'), gains) for k in range(3)]
                  + [('self_training', '1_8', k, 35.0) for k in range(3)])
    hist = pd.DataFrame([dict(method='cps', split='1_16', seed=0, iter=i, overlap=o) for i, o in [(10, 0.7), (20, 0.6), (30, 0.8)]])
    t = check_targets(good, hist)
    assert t.holds.tolist() == [True, True, True, True, True, True], t
    assert t.measured[0] == '+4.00 ± 0.00' and 'first 70.0% → lowest 60.0% → final 80.0% (final above first in 1 of 1 runs' in t.measured[5]
    bad = good.copy()
    bad.loc[(bad.method == 'cps') & (bad.split == '1_4') & (bad.seed == 1), 'miou'] -= 5     # one collapsed run
    bad.loc[(bad.method == 'cps_cutmix') & (bad.split == '1_4'), 'miou'] += 4               # the gain grows at 1/4
    t = check_targets(bad, hist.assign(overlap=hist.overlap[::-1].values))
    assert t.holds.tolist() == [True, True, False, False, True, False]
    assert 'lowest -4.00 (CPS w/o CutMix at 1/4' in t.measured[2]
    t = check_targets(good[good.split == '1_16'])                    # no self-training, no history, one split
    assert t.holds.tolist()[:2] == [True, True] and t.holds.tolist()[3:] == [None, None, None]
    assert 'not run' in t.measured[5] and '| — |' in targets_markdown(t) and '| ✓ |' in targets_markdown(t)
    assert paired_gains(good, '1_8', 'cps', 'self_training') == pytest.approx([1.0, 1.1, 1.2])


def test_markdown_of_targets_per_seed_probes_and_the_paper_comparison():
    import pandas as pd
    t = _table([(m, s, k, base + extra + 0.1 * k) for s, base, gains in
                [('1_16', 30, (0, 2.5, 4.0)), ('1_8', 34, (0, 2.0, 3.0)), ('1_4', 37, (0, 1.0, 1.5))]
                for m, extra in zip(('supervised', 'cps', 'cps_cutmix'), gains) for k in range(3)])
    md = targets_markdown({'seed 0': check_targets(t), 'seed 3': check_targets(t[t.split == '1_16'])}).splitlines()
    assert md[0] == '| claim | target | seed 0 | seed 3 |' and len(md) == 2 + 6
    assert md[2].endswith('| +4.00 ± 0.00 ✓ | +4.00 ± 0.00 ✓ |') and md[5].endswith('✓ | not run — |')
    cmp = mini.paper_comparison_markdown(t).splitlines()
    assert cmp[2] == '| 1/16 | +3.77 | +1.50 | +2.50 | +4.00 |'       # paper Table 1 R50: 71.98 − 68.21
    probes = pd.DataFrame([dict(probe='p48_base', setting='48 px', size=48, method='cps', split='1_16', seed=0, miou=40.0),
                           dict(probe='lam', setting='λ 2', size=32, method='cps_cutmix', split='1_16', seed=1, miou=35.0),
                           dict(probe='new', setting='x', size=48, method='cps_cutmix', split='1_16', seed=0, miou=39.0)])
    rows = mini.probes_markdown(probes, t).splitlines()
    assert rows[2] == '| p48_base | 48 px | CPS w/o CutMix, 1/16, 0: 40.00 |  |'
    assert rows[3] == '| lam | λ 2 | CPS w/ CutMix, 1/16, 1: 35.00 | 30.10 / 32.60 / 34.10 |'    # the earlier table, same seed
    assert rows[4] == '| new | x | CPS w/ CutMix, 1/16, 0: 39.00 | – / 40.00 / – |'               # its own size's baseline
    other = pd.DataFrame([dict(probe='big', setting='8k', size=32, data='8k', method='supervised', split='1_4', seed=0, miou=44.0),
                          dict(probe='big_cm', setting='8k λ 2', size=32, data='8k', method='cps_cutmix', split='1_4', seed=0, miou=46.0),
                          dict(probe='lam', setting='λ 2', size=32, data=None, method='cps_cutmix', split='1_4', seed=0, miou=38.0)])
    rows = mini.probes_markdown(other, t, own_baselines=('big',)).splitlines()
    assert rows[2] == '| big | 8k | Supervised, 1/4, 0: 44.00 |  |'                                # carries its own runs
    assert rows[3] == '| big_cm | 8k λ 2 | CPS w/ CutMix, 1/4, 0: 46.00 | 44.00 / – / – |'          # other data: its own baseline
    assert rows[4] == '| lam | λ 2 | CPS w/ CutMix, 1/4, 0: 38.00 | 37.00 / 38.00 / 38.50 |'       # the recipe's data: the table


def test_export_results_writes_paths_relative_to_the_project_root(tmp_path):
    run = tmp_path / 'runs' / 'x' / 'mini_cps_1_16_seed0_abc'
    run.mkdir(parents=True)
    (run / 'result.json').write_text(json.dumps({'run_id': 'mini_cps_1_16_seed0_abc', 'config': {'data': {'root': str(tmp_path / 'data' / 'mini')}}}))
    (out,) = export_results(tmp_path / 'runs', tmp_path / 'exported', tmp_path)
    assert out == tmp_path / 'exported' / 'mini_cps_1_16_seed0_abc' / 'result.json'
    assert json.loads(out.read_text())['config']['data']['root'] == 'data/mini'
    with pytest.raises(FileNotFoundError, match='exp_mini'): export_results(tmp_path / 'exported2', tmp_path / 'e', tmp_path)


def _notebook(name):
    return json.loads((REPO / 'nbs' / name).read_text())


def test_exp_mini_is_skipped_by_nbdev_test_and_has_its_parameters_cell():
    cells = _notebook('exp_mini.ipynb')['cells']
    assert cells[0]['cell_type'] == 'markdown' and '- skip_exec: true' in ''.join(cells[0]['source'])
    (params,) = [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
    src = ''.join(params['source'])
    for name in ('methods', 'splits', 'seeds', 'data_seed', 'iters', 'data_root', 'out_dir'): assert f'\n{name} =' in '\n' + src


def test_exp_mini_runs_end_to_end_at_tiny_size(tmp_path):
    pm = pytest.importorskip('papermill')
    out = tmp_path / 'results'
    params = dict(splits=116, seeds=0, iters=2, data_root=str(tmp_path / 'data'), out_dir=str(out), n_images=128, workers=2,
                  arms='none', eval_set='val')     # the mini presets as they are, on the validation images (the demo's form)
    pm.execute_notebook(str(REPO / 'nbs' / 'exp_mini.ipynb'), str(tmp_path / 'exp_mini.out.ipynb'), parameters=params,
                        kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    import pandas as pd
    table = pd.read_csv(out / 'data_seed0' / 'mini_table.csv')
    assert sorted(zip(table.method, table.split)) == [('cps', '1_16'), ('cps_cutmix', '1_16'), ('self_training', '1_8'),
                                                      ('supervised', '1_16'), ('supervised', '1_8'), ('supervised', 'full')]
    results = [json.loads(p.read_text()) for p in (out / 'data_seed0').glob('*/result.json')]
    assert len(results) == 6 and all(r['iters'] == 2 and r['backbone'] == MINI_BACKBONE for r in results)
    st = next(r for r in results if r['method'] == 'self_training')     # taught by the supervised 1/8 run of its seed
    teacher = next(r for r in results if (r['method'], r['split']) == ('supervised', '1_8'))
    assert st['config']['model']['teacher_checkpoint'].endswith(f"{teacher['run_id']}/checkpoint.pt")
    history = pd.read_csv(out / 'data_seed0' / 'mini_history.csv')
    assert set(history.method) == set(table.method) and history.overlap.notna().any()
    full = next(r for r in results if r["n_labeled"] == 128)
    assert full['method'] == 'supervised' and full['config']['data']['labeled_list'].endswith('train_aug.txt')
    assert all(resolve_asset(r['config']['model']['pretrained']) == MINI_WEIGHTS for r in results)
    assert (out / 'data_seed0' / 'mini_figure.png').stat().st_size > 1000 and (out / 'data_seed0' / 'mini_summary.csv').exists()
    assert all(r['eval_set'] == 'val' and r['arm'] is None for r in results)


def test_exp_mini_runs_both_arms_on_the_test_images_at_tiny_size(tmp_path):
    pm = pytest.importorskip('papermill')
    out = tmp_path / 'results'
    params = dict(methods="supervised,cps_cutmix", splits=116, seeds=0, iters=2, data_root=str(tmp_path / 'data'),
                  out_dir=str(out), n_images=128, workers=2, full_ceiling=False, self_training=[])   # defaults: both arms, test images
    pm.execute_notebook(str(REPO / 'nbs' / 'exp_mini.ipynb'), str(tmp_path / 'exp_mini.out.ipynb'), parameters=params,
                        kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    import pandas as pd
    table = pd.read_csv(out / 'data_seed0_test' / 'mini_table.csv', keep_default_na=False)
    assert sorted(zip(table.arm, table.row, table.split)) == sorted(
        [('published', r, '1_16') for r in ('cps_cutmix', 'supervised')]
        + [('tuned', r, '1_16') for r in ('cps_cutmix', 'supervised', 'supervised_balanced')])
    assert set(table.eval_set) == {'test'} and 'CPS w/ CutMix · balanced · ramp 20% · half mask · λ 1.5' in set(table.label)
    results = [json.loads(p.read_text()) for p in (out / 'data_seed0_test').glob('*/result.json')]
    assert all(r['eval_set'] == 'test' and r['data']['lists']['val']['path'].endswith('test.txt') and r['recipe'] for r in results)
    assert {r['arm'] for r in results} == {'published', 'tuned'}
    assert (out / 'data_seed0_test' / 'mini_summary.csv').exists() and (out / 'data_seed0_test' / 'mini_history.csv').exists()


def test_exp_mini_refuses_the_pretraining_seed(tmp_path):
    pm = pytest.importorskip('papermill')
    with pytest.raises(pm.PapermillExecutionError, match='pretraining corpus'):
        pm.execute_notebook(str(REPO / 'nbs' / 'exp_mini.ipynb'), str(tmp_path / 'o.ipynb'), parameters=dict(data_seed=1000),
                            kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    assert not (tmp_path / 'data').exists()


def test_pretrain_command_line_parses_into_a_pretrain_config():
    import argparse
    p = argparse.ArgumentParser()
    mini.add_pretrain_parser(p.add_subparsers(dest='command', required=True))
    a = p.parse_args(['pretrain', '--iters', '7', '--corpus-seed', '5', '--work-dir', 'w', '--out', 'w.pt'])
    assert (a.iters, a.corpus_seed, a.work_dir, a.lr, a.vocabulary) == (7, 5, 'w', 0.03, 'pretrain')
    from cps_repro import pretrain   # the command's home (cps_repro.mini re-exports its public names)
    assert a.out == 'w.pt' and a.func is pretrain._cmd_pretrain
    with pytest.raises(SystemExit): p.parse_args(['pretrain', '--iters', '7'])   # writes only where the user says
    with pytest.raises(SystemExit): p.parse_args(['pretrain', '--iters', 'many'])


def test_exp_mini_refuses_an_iters_word_other_than_demo(tmp_path):
    pm = pytest.importorskip('papermill')
    with pytest.raises(pm.PapermillExecutionError, match="iters='fast'.*'demo'"):
        pm.execute_notebook(str(REPO / 'nbs' / 'exp_mini.ipynb'), str(tmp_path / 'o.ipynb'), parameters=dict(iters='fast'),
                            kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    assert not (tmp_path / 'data').exists()


def test_make_demo_runs_the_demo_schedule_by_default():
    import subprocess
    from cps_repro.presets import MINI_DEMO_ITERS, MINI_ITERS
    assert 0 < MINI_DEMO_ITERS < MINI_ITERS
    dry = lambda *a: subprocess.run(['make', '-n', 'demo', *a], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert '-p iters demo ' in dry() and '-p iters 20 ' in dry('DEMO_ITERS=20') and '-p iters' not in dry('DEMO_ITERS=')


# ---- the arms, the held-out test set, the claims, the committed tables ------------------------------------------------
def test_arm_jobs_give_each_arm_its_rows_and_share_identical_runs(tmp_path):
    from cps_repro.presets import MINI_ARM_ROWS
    jobs = mini_jobs(['supervised', 'cps', 'cps_cutmix'], '1_16', [0], 'd', tmp_path / 'o', iters=5, full_ceiling=True,
                     self_training='1_8', arms=['published', 'tuned'], eval_set='test')
    cells = {(j.arm, j.row, j.split) for j in jobs}
    assert cells == {('published', r, '1_16') for r in ('supervised', 'cps', 'cps_cutmix')} | \
        {('tuned', r, '1_16') for r in ('supervised', 'supervised_balanced', 'cps', 'cps_cutmix')} | \
        {(a, 'supervised', s) for a in ('published', 'tuned') for s in ('1_8', 'full')} | \
        {('published', 'self_training', '1_8'), ('tuned', 'self_training_balanced', '1_8')}
    by = {(j.arm, j.row, j.split): j for j in jobs}
    assert all(j.cfg.eval.set == 'test' and j.cfg.arm == j.arm and '--set' in j.args for j in jobs)
    pub, tuned = by[('published', 'cps_cutmix', '1_16')].cfg, by[('tuned', 'cps_cutmix', '1_16')].cfg
    assert (pub.hparams.weight, pub.hparams.mask, pub.hparams.rampup, pub.hparams.balance) == (1.0, 'box', 0.0, 0.0)
    assert tuned.hparams == mini_preset('cps_cutmix', '1_16').hparams
    assert by[('tuned', 'supervised_balanced', '1_16')].cfg.hparams.balance == 0.5
    st = by[('tuned', 'self_training_balanced', '1_8')]
    assert (st.cfg.hparams.balance, st.cfg.hparams.rampup) == (0.5, MINI_ARM_ROWS['tuned']['self_training_balanced'][1]['rampup'])
    assert st.needs == (by[('tuned', 'supervised', '1_8')].cfg.run_id,)                      # taught within its arm
    assert by[('published', 'self_training', '1_8')].needs == (by[('published', 'supervised', '1_8')].cfg.run_id,)
    # the jobs' own command lines build the same configs (what the CLI will train)
    from cps_repro.presets import experiment_config
    for j in jobs:
        sets = list(j.args[j.args.index('--set') + 1:])
        assert experiment_config(j.args[2], j.split, j.args[6], sets).run_id == j.cfg.run_id
    with pytest.raises(ValueError, match='arm'): mini_jobs('cps', '1_16', 0, 'd', 'o', arms=['paper'])


def test_run_jobs_runs_a_run_two_arms_share_once(tmp_path, monkeypatch):
    jobs = mini_jobs(['supervised'], '1_16', [0], 'd', tmp_path / 'o', full_ceiling=False, arms=['tuned'])
    twice = jobs + [dataclasses_replace(jobs[0], arm='published')]            # the same run id in another arm
    calls = []
    monkeypatch.setattr(mini, 'run_job', lambda j, log_dir=None: calls.append(j.cfg.run_id) or
                        dict(miou=1.0, wall_seconds=0.0, run_id=j.cfg.run_id))
    res = run_jobs(twice, workers=2, progress=None)
    assert len(res) == len(twice) and res[-1] == res[0] and sorted(calls) == sorted({j.cfg.run_id for j in jobs})


def dataclasses_replace(obj, **kw):
    import dataclasses
    return dataclasses.replace(obj, **kw)


def test_check_targets_per_arm_uses_the_arm_s_own_baselines():
    import pandas as pd
    rows = [('supervised', 30.0), ('supervised_balanced', 31.0), ('cps', 33.0), ('cps_cutmix', 35.0)]
    t = pd.DataFrame([dict(method=r.split('_balanced')[0], row=r, arm='tuned', split='1_16', seed=k, miou=v + 0.1 * k)
                      for r, v in rows for k in range(3)])
    out = check_targets(t)
    assert len(out) == 7 and out.claim.iloc[-1] == 'cross supervision beyond balancing'
    assert out.measured.iloc[-1] == '+4.00 ± 0.00' and out.holds.iloc[-1]                      # against supervised · balanced
    assert out.measured.iloc[0] == '+5.00 ± 0.00'                                                # against plain supervised
    with pytest.raises(ValueError, match='one arm'): check_targets(pd.concat([t, t.assign(arm='published')]))
    assert len(check_targets(t[t.row != 'supervised_balanced'].assign(arm='published'))) == 6


def test_ensure_dataset_adds_the_test_set_to_data_generated_before_it(tmp_path):
    from cps_repro.synthetic import synthesize, load_synthetic_info
    synthesize(tmp_path / 'd', n=16, n_val=3, seed=4, size=16, progress=False, n_test=0)
    before = {p: p.read_bytes() for p in (tmp_path / 'd').rglob('*') if p.is_file() and p.name != 'synthetic.json'}
    ensure_dataset(tmp_path / 'd', 4, 16, 3, size=16, n_test=3)
    assert load_synthetic_info(tmp_path / 'd')['counts']['test'] == 3
    assert all(p.read_bytes() == b for p, b in before.items())
    with pytest.raises(FileExistsError, match='test set of 3'): ensure_dataset(tmp_path / 'd', 4, 16, 3, size=16, n_test=5)


def test_the_claims_file_is_the_committed_pre_registration():
    text = (REPO / mini.CLAIMS_FILE).read_text(encoding='utf-8')
    assert text == mini.claims_markdown(), 'nbs/mini_results/claims.md differs from claims_markdown(): commit it again'
    for claim, target, _ in mini.CLAIMS: assert target in text
    assert 'fixed before any fresh-seed run' in text and all(f'-p data_seed {k} ' in text for k in mini.FRESH_DATA_SEEDS)
    used = {int(p.name.split('data_seed')[1].split('_')[0].split('.')[0]) for p in (REPO / 'nbs' / 'mini_results').rglob('*data_seed*')}
    assert not used & set(mini.FRESH_DATA_SEEDS)                  # fresh: never generated for a committed result


def _csv_of(frame):
    import io, pandas as pd
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


@pytest.mark.parametrize('folder', sorted(p.parent.relative_to(REPO).as_posix()
                                          for p in (REPO / 'nbs' / 'mini_results').glob('data_seed*/mini_table.csv')))
def test_every_committed_table_is_recomputed_from_its_result_files(folder):
    import pandas as pd
    d = REPO / folder
    data_seed = int(d.name.removeprefix('data_seed').split('_')[0])
    results = mini.load_run_results(d / 'run_results')          # every committed table has its result.json files
    table = results_table(None, results, data_seed=data_seed)
    committed = pd.read_csv(d / 'mini_table.csv')
    pd.testing.assert_frame_equal(_csv_of(table[committed.columns]), committed, check_exact=True)
    pd.testing.assert_frame_equal(_csv_of(summarize(committed)), pd.read_csv(d / 'mini_summary.csv'), check_exact=True)
    pd.testing.assert_frame_equal(_csv_of(summarize(_csv_of(table[committed.columns]))), pd.read_csv(d / 'mini_summary.csv'), check_exact=True)
    hist, committed_h = history_table(None, results, data_seed=data_seed), pd.read_csv(d / 'mini_history.csv')
    key = ['method', 'split', 'seed', 'iter'] + (['arm', 'row'] if 'arm' in committed_h else [])
    pd.testing.assert_frame_equal(_csv_of(hist[committed_h.columns]).sort_values(key).reset_index(drop=True),
                                  committed_h.sort_values(key).reset_index(drop=True), check_exact=True)


def test_the_history_without_result_files_lives_under_earlier():
    root = REPO / 'nbs' / 'mini_results'
    for table in root.glob('data_seed*/mini_table.csv'): assert (table.parent / 'run_results').is_dir(), table
    assert sorted(p.name for p in (root / 'earlier').glob('tuned_val_1_16_data_seed*')) == \
        ['tuned_val_1_16_data_seed7', 'tuned_val_1_16_data_seed8']


def test_the_baselines_get_the_same_help_and_keep_their_run_ids_without_it():
    from cps_repro.config import ExperimentConfig
    from cps_repro.losses import cross_entropy
    from cps_repro.methods.supervised import balanced_supervised_loss
    logits = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(2, 8, 8, dtype=torch.long); target[:, :2, :2] = 3; target[1, 7] = 255
    assert torch.allclose(balanced_supervised_loss(logits, target, 0.0), cross_entropy(logits, target, ignore_index=255))
    assert not torch.allclose(balanced_supervised_loss(logits, target, 0.5), cross_entropy(logits, target, ignore_index=255))
    for method in ('supervised', 'self_training'):
        c = mini_preset(method, '1_8')
        old = {**c.to_dict(), 'hparams': {}}                       # a config written before the baselines had options
        assert ExperimentConfig.from_dict(old).run_id == c.run_id
        assert apply_overrides_(c, ['hparams.balance=0.5']).run_id != c.run_id


def apply_overrides_(cfg, pairs):
    from cps_repro.overrides import apply_overrides
    return apply_overrides(cfg, pairs)


def test_make_demo_keeps_its_three_runs_on_the_validation_images():
    "exp_mini runs both arms on the test images by default; the demo keeps its three runs (10 minutes on 2 cores)."
    import subprocess
    dry = subprocess.run(['make', '-n', 'demo'], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert '-p arms none' in dry and '-p eval_set val' in dry, 'the Makefile demo line needs -p arms none -p eval_set val'
