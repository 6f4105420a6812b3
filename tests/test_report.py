"Tests of cps_repro.report: paper numbers, results loading, the paper/mini tables, their files, Figures 5-7 and the report notebooks."
import json, math, re, statistics, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cps_repro.report import (MINI_NOTE, NoRunsError, PAPER_TABLE_FILES, figure5_self_training, figure6_qualitative,
                              figure7_overlap, load_results, mini_table, paper_numbers, paper_table, run_history,
                              save_figure, signed, table_for, table_name, write_table)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / 'shared'
PACKAGE_TABLES = REPO / 'cps_repro' / 'assets' / 'paper_tables'
IDS = ['2007_000033', '2007_000042', '2007_000061']


# ---- hand-made runs ---------------------------------------------------------------------------------------------
def write_run(out, method, miou, seed=0, dataset='voc', split='1_8', backbone='resnet50', preset=None, n_labeled=1323,
              data_root='data/voc', history=None, predictions=None, name=None, provenance='real', pretrained='w.pth'):
    "A result.json with the trainer's fields (+ optional predictions/<id>.png palette PNGs); returns the run folder."
    preset = preset or f'{dataset}_{method}_{backbone}'
    run_id = name or f'{preset}_{split}_seed{seed}_abcd1234'
    d = Path(out) / run_id
    d.mkdir(parents=True)
    history = history if history is not None else [
        {'iter': 10, 'miou': miou - 4.0, 'miou_2': miou - 4.5, 'overlap': 0.6},
        {'iter': 20, 'miou': miou + 1.0, 'miou_2': miou, 'overlap': 0.7},    # best during training > final
        {'iter': 30, 'miou': miou, 'miou_2': miou - 0.2, 'overlap': 0.75}]
    res = {'run_id': run_id, 'preset': preset, 'dataset': dataset, 'split': split, 'n_labeled': n_labeled,
           'n_unlabeled': 100, 'backbone': backbone, 'method': method, 'seed': seed, 'iters': 30, 'miou': miou,
           'per_class_iou': [miou] * 3, 'pixel_acc': 90.0, 'miou_net2': miou - 0.2, 'overlap': 0.75,
           'best_miou': max(h['miou'] for h in history) if history else None, 'best_iter': 20,
           'eval': {'network': 'net1', 'mode': 'whole'}, 'wall_seconds': 3.0, 'device': 'cpu',
           'package_version': '0.1.0', 'torch_version': '2', 'git_commit': None, 'finished_at': '2026-01-01T00:00:00+00:00',
           'history': history, 'config': {'name': preset, 'data': {'dataset': dataset, 'root': str(data_root), 'split': split},
                                          'model': {'backbone': backbone, 'pretrained': pretrained}}}
    if provenance is not None: res['data'] = {'provenance': provenance, 'fingerprint': 'abcdef123456'}
    (d / 'result.json').write_text(json.dumps(res))
    for image_id, cls in (predictions or {}).items():
        save_png(np.where(_box(), cls, 0), d / 'predictions' / f'{image_id}.png')
    return d


def _box(h=20, w=28):
    m = np.zeros((h, w), bool); m[5:15, 6:20] = True
    return m


def save_png(label, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(label, dtype=np.uint8), mode='P')
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


def make_voc_root(root, ids=IDS):
    v = Path(root) / 'VOCdevkit' / 'VOC2012'
    rng = np.random.default_rng(0)
    for i in ids:
        (v / 'JPEGImages').mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(v / 'JPEGImages' / f'{i}.jpg')
        gt = np.where(_box(), 15, 0); gt[0] = 255
        save_png(gt, v / 'SegmentationClassAug' / f'{i}.png')
    return Path(root)


CPS_R50_18 = [72.60, 72.90, 73.20]          # paper 73.20 -> mean 72.90, std 0.30, delta -0.30
CUTMIX_R101_116 = 75.00                     # paper 74.48 -> +0.52
SUP_R50_18 = [69.10, 69.90]                 # no paper number -> mean 69.50, std 0.57
MINI_CPS = [40.0, 44.0]


@pytest.fixture
def results_dir(tmp_path):
    "Hand-made runs of every table, mini runs, a damaged file; predictions + a VOC root for Figure 6."
    out, root = tmp_path / 'results', make_voc_root(tmp_path / 'voc')
    preds = {'supervised': {IDS[0]: 3, IDS[1]: 3}, 'cps': {IDS[0]: 15, IDS[1]: 15, IDS[2]: 15}, 'cps_cutmix': {IDS[0]: 15, IDS[1]: 15}}
    for seed, v in enumerate(CPS_R50_18): write_run(out, 'cps', v, seed=seed, data_root=root, predictions=preds['cps'] if seed == 0 else None)
    for seed, v in enumerate(SUP_R50_18): write_run(out, 'supervised', v, seed=seed, data_root=root, predictions=preds['supervised'])
    write_run(out, 'cps_cutmix', 74.10, data_root=root, predictions=preds['cps_cutmix'])
    write_run(out, 'self_training', 71.0, data_root=root)
    write_run(out / 'other_machine', 'cps_cutmix', CUTMIX_R101_116, split='1_16', backbone='resnet101_tv', n_labeled=662)
    write_run(out, 'cps', 76.0, dataset='cityscapes', split='1_4', n_labeled=744)
    write_run(out, 'cps_cutmix', 60.0, split='92', n_labeled=92)
    for seed, v in enumerate(MINI_CPS):
        write_run(out, 'cps', v, seed=seed, preset='mini_cps', backbone='small_resnet', split='1_4', n_labeled=16, data_root='data/synthetic')
    write_run(out, 'supervised', 30.0, preset='mini_supervised', backbone='small_resnet', split='1_4', n_labeled=16)
    (out / 'killed').mkdir(); (out / 'killed' / 'result.json').write_text('{"run_id": "x", "miou": ')
    return out


def cell(df, method, backbone, column):
    return df[(df.Method == method) & (df.Backbone == backbone)][column].item()


# ---- the paper's numbers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('table', sorted(PAPER_TABLE_FILES))
def test_paper_numbers_are_the_package_csv_exactly(table):
    expected = pd.read_csv(PACKAGE_TABLES / PAPER_TABLE_FILES[table], dtype={'split': str})
    pd.testing.assert_frame_equal(paper_numbers(table), expected)


@pytest.mark.parametrize('table', ['table1', 'table2', 'table3'])   # the headline number has no reference file
def test_package_copy_matches_the_shared_reference(table):
    ref = SHARED / 'reference' / 'paper_tables' / PAPER_TABLE_FILES[table]
    if not ref.is_file(): pytest.skip('the reference copy of the paper tables (outside the repository) is not present')
    pd.testing.assert_frame_equal(paper_numbers(table), pd.read_csv(ref, dtype={'split': str}))


def test_paper_numbers_aliases_and_known_values():
    assert paper_numbers('voc').equals(paper_numbers('table1'))
    assert paper_numbers('cityscapes').equals(paper_numbers('table2'))
    assert paper_numbers('VOC_FEW').equals(paper_numbers('table3'))
    t1 = paper_numbers('table1')
    assert t1.query("method == 'CPS w/o CutMix' and backbone == 'R50' and split == '1/8'").miou.item() == 73.20
    assert t1.query("method == 'CPS w/ CutMix' and backbone == 'R101' and split == '1/16'").n_labeled.item() == 662
    with pytest.raises(ValueError, match='voc_few'): table_name('table4')


# ---- loading ----------------------------------------------------------------------------------------------------
def test_load_results_reads_every_run_and_warns_about_the_damaged_one(results_dir):
    with pytest.warns(UserWarning, match=r'killed[/\\]result\.json'):
        r = load_results(results_dir)
    assert len(r) == 13
    assert r['table'].value_counts().to_dict() == {'table1': 8, 'mini': 3, 'table2': 1, 'table3': 1}
    assert (r.path.map(lambda p: Path(p).name) == 'result.json').all()
    assert r.set_index('run_id').loc['voc_cps_resnet50_1_8_seed0_abcd1234', 'best_miou'] == 73.60


def test_load_results_skips_incomplete_and_duplicate_runs(tmp_path):
    out = tmp_path / 'r'
    write_run(out, 'cps', 70.0)
    d = write_run(out / 'copy', 'cps', 70.0)                          # same run_id copied twice
    bad = write_run(out, 'cps', 70.0, seed=5)
    res = json.loads((bad / 'result.json').read_text()); del res['miou']
    (bad / 'result.json').write_text(json.dumps(res))
    (out / 'list').mkdir(); (out / 'list' / 'result.json').write_text('[1, 2]')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        r = load_results(out)
    msgs = ' '.join(str(w.message) for w in caught)
    assert len(r) == 1 and len(caught) == 3
    assert str(d / 'result.json') in msgs and "missing ['miou']" in msgs and str(bad / 'result.json') in msgs
    assert 'JSON object' in msgs


def test_load_results_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='out_dir'): load_results(tmp_path / 'nope')
    empty = load_results(tmp_path)
    assert empty.empty and 'miou' in empty.columns
    assert paper_table(empty, 'table1').iloc[:, 2:].map(lambda c: c.endswith('| — | —')).all().all()
    assert mini_table(empty).empty


def test_table_for_routes_runs():
    assert table_for('voc', '1_2', 'resnet101') == 'table1'
    assert table_for('voc', '366', 'resnet50') == 'table3'
    assert table_for('cityscapes', '1/16', 'resnet50_tv') == 'table2'
    assert table_for('voc', '1_8', 'small_resnet') is None
    assert table_for('cityscapes', '1_8', 'small_resnet', mini=True) == 'mini'


# ---- tables -------------------------------------------------------------------------------------------------------
def test_paper_table_cells(results_dir):
    with pytest.warns(UserWarning): r = load_results(results_dir)
    t1 = paper_table(r, 'table1')
    assert list(t1.columns) == ['Method', 'Backbone', '1/16 (662)', '1/8 (1323)', '1/4 (2646)', '1/2 (5291)']
    m, s = statistics.mean(CPS_R50_18), statistics.stdev(CPS_R50_18)
    assert (round(m, 2), round(s, 2)) == (72.90, 0.30)
    assert cell(t1, 'CPS w/o CutMix', 'R50', '1/8 (1323)') == '73.20 | 72.90 ± 0.30 (n=3) | −0.30'
    assert cell(t1, 'CPS w/ CutMix', 'R101', '1/16 (662)') == '74.48 | 75.00 (n=1) | +0.52'
    assert cell(t1, 'CPS w/ CutMix', 'R50', '1/8 (1323)') == '73.67 | 74.10 (n=1) | +0.43'
    assert cell(t1, 'CPS w/o CutMix', 'R101', '1/8 (1323)') == '75.83 | — | —'
    assert cell(t1, 'Supervised', 'R50', '1/8 (1323)') == '— | 69.50 ± 0.57 (n=2) | —'
    assert cell(t1, 'Supervised', 'R101', '1/2 (5291)') == '— | — | —'
    assert cell(t1, 'Self-training', 'R50', '1/8 (1323)') == '— | 71.00 (n=1) | —'
    assert t1.Method.tolist()[:3] == ['Supervised', 'Supervised', 'MT'] and t1.Method.iloc[-1] == 'Self-training'
    t2, t3 = paper_table(r, 'cityscapes'), paper_table(r, 'table3')
    assert cell(t2, 'CPS w/o CutMix', 'R50', '1/4 (744)') == '76.85 | 76.00 (n=1) | −0.85'
    assert list(t3.columns)[2:] == ['1/16 (92)', '1/8 (183)', '1/4 (366)', '1/2 (732)']
    assert cell(t3, 'CPS w/ CutMix', 'R50', '1/16 (92)') == '64.07 | 60.00 (n=1) | −4.07'


def test_paper_table_long_numbers_and_every_paper_cell(results_dir):
    with pytest.warns(UserWarning): r = load_results(results_dir)
    for t in PAPER_TABLE_FILES:
        long, wide, paper = paper_table(r, t, long=True), paper_table(r, t), paper_numbers(t)
        merged = paper.merge(long, on=['method', 'backbone', 'split'], how='left')
        assert merged.paper.notna().all() and (merged.paper == merged.miou).all()
        assert (merged.n_labeled_x == merged.n_labeled_y).all()
        for p in paper.itertuples():                      # the rendered cell starts with the paper's number
            col = next(c for c in wide.columns if c.startswith(p.split + ' '))
            assert cell(wide, p.method, p.backbone, col).split(' | ')[0] == f'{p.miou:.2f}'
        assert long.loc[long.paper.isna(), 'method'].isin(['Supervised', 'Self-training']).all()
    long = paper_table(r, 'table1', long=True)
    row = long.query("method == 'CPS w/o CutMix' and backbone == 'R50' and split == '1/8'").iloc[0]
    assert row.n == 3 and math.isclose(row['mean'], np.mean(CPS_R50_18)) and math.isclose(row['std'], np.std(CPS_R50_18, ddof=1))
    assert math.isclose(row.delta, np.mean(CPS_R50_18) - 73.20)
    assert long.n.sum() == 8 and long.delta.dropna().size == 3   # supervised / self-training have no paper delta


def test_mini_runs_only_in_the_mini_table(results_dir):
    with pytest.warns(UserWarning): r = load_results(results_dir)
    total = sum(paper_table(r, t, long=True).n.sum() for t in PAPER_TABLE_FILES)
    assert total == (~r.mini).sum() == 10
    mt = mini_table(r)
    assert mt.to_dict('records') == [{'Method': 'Supervised', '1/4 (16)': '30.00 (n=1)'},
                                     {'Method': 'CPS w/o CutMix', '1/4 (16)': '42.00 ± 2.83 (n=2)'}]
    long = mini_table(r, long=True)
    assert long.n.tolist() == [1, 2] and math.isclose(long['std'].iloc[1], statistics.stdev(MINI_CPS))


def test_signed_uses_a_true_minus_and_rounds():
    assert signed(-0.294) == '−0.29' and signed(0.515) in ('+0.52', '+0.51') and signed(-0.001) == '+0.00'


def test_write_table_md_tex_csv(results_dir, tmp_path):
    with pytest.warns(UserWarning): r = load_results(results_dir)
    t1 = paper_table(r, 'table1')
    paths = write_table(t1, tmp_path / 'rep', 'table1', caption='Table 1: VOC 50% & more')
    assert {p.suffix for p in paths.values()} == {'.md', '.tex', '.csv'} and all(p.stat().st_size for p in paths.values())
    md = paths['md'].read_text()
    assert r'| CPS w/o CutMix | R50 | 68.21 \| — \| — | 73.20 \| 72.90 ± 0.30 (n=3) \| −0.30 |' in md
    tex = paths['tex'].read_text()
    assert r'\caption{Table 1: VOC 50\% \& more}' in tex and r'$\pm$' in tex and '±' not in tex and '—' not in tex
    assert tex.count(r' \\') == len(t1) + 1
    assert pd.read_csv(paths['csv']).equals(t1)
    with pytest.raises(ValueError, match='plain file name'): write_table(t1, tmp_path, 'sub/table1')


# ---- figures --------------------------------------------------------------------------------------------------------
def _check_saved(fig, out, name):
    paths = save_figure(fig, out, name)
    assert paths['png'].read_bytes()[:4] == b'\x89PNG' and paths['pdf'].read_bytes()[:4] == b'%PDF'
    assert all(p.stat().st_size > 1000 for p in paths.values())


def test_figures_from_real_runs(results_dir, tmp_path):
    with pytest.warns(UserWarning): r = load_results(results_dir)
    f5 = figure5_self_training(r)
    assert f5._suptitle.get_text() == 'Figure 5: self-training vs. CPS' and MINI_NOTE not in f5._suptitle.get_text()
    assert [a.get_title() for a in f5.axes] == ['VOC, R50']          # only where self-training was run
    assert sorted(t.get_text() for t in f5.legends[0].get_texts()) == sorted(['Supervised', 'Self-training', 'CPS w/o CutMix', 'CPS w/ CutMix'])
    f6 = figure6_qualitative(r, n=4)
    titles = [a.get_title() for a in f6.axes]
    assert titles[:5] == ['Image', 'Ground truth', 'Supervised', 'CPS w/o CutMix', 'CPS w/ CutMix']
    assert len(f6.axes) == 2 * 5                      # only the two ids every method predicted
    assert [a.get_ylabel() for a in f6.axes[::5]] == IDS[:2]
    f7 = figure7_overlap(r)
    assert len(f7.axes) == 2 and 'VOC, R50' in f7.axes[0].get_title()
    for fig, name in ((f5, 'figure5'), (f6, 'figure6'), (f7, 'figure7')): _check_saved(fig, tmp_path / 'figs', name)


def test_figures_fall_back_to_mini_runs_and_say_so(results_dir, tmp_path):
    with pytest.warns(UserWarning): r = load_results(results_dir)
    mini = r[r.mini]
    f5, f7 = figure5_self_training(mini), figure7_overlap(mini)
    assert f5._suptitle.get_text().endswith(MINI_NOTE) and 'no self-training run yet' in f5._suptitle.get_text()
    assert f7._suptitle.get_text().endswith(MINI_NOTE)
    _check_saved(f7, tmp_path, 'figure7_mini')
    with pytest.raises(NoRunsError, match='predictions/'): figure6_qualitative(mini)
    with pytest.raises(NoRunsError): figure5_self_training(r.iloc[:0])


def test_figure7_reads_metrics_jsonl_when_history_is_empty(tmp_path):
    d = write_run(tmp_path / 'r', 'cps', 70.0, history=[])
    rows = [{'iter': 1, 'lr': 0.1, 'loss/total': 3.0}, {'iter': 5, 'miou': 60.0, 'miou_2': 59.0, 'overlap': 0.5},
            {'iter': 5, 'miou': 61.0, 'miou_2': 59.0, 'overlap': 0.55}, {'iter': 10, 'miou': 70.0, 'miou_2': 69.0, 'overlap': 0.8}]
    (d / 'metrics.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in rows) + '{"iter": 11, "miou"')
    r = load_results(tmp_path / 'r')
    h = run_history(r.iloc[0])
    assert h.iter.tolist() == [5, 10] and h.miou.tolist() == [61.0, 70.0]
    figure7_overlap(r)
    no_overlap = write_run(tmp_path / 's', 'cps', 70.0, history=[{'iter': 5, 'miou': 70.0}])
    with pytest.raises(NoRunsError, match='eval_both'): figure7_overlap(load_results(no_overlap.parent))


def test_figure6_errors_name_the_missing_data_root(results_dir, tmp_path):
    with pytest.warns(UserWarning): r = load_results(results_dir)
    with pytest.raises(Exception, match=re.escape(str(tmp_path / "elsewhere"))):
        figure6_qualitative(r, data_root=tmp_path / 'elsewhere')


# ---- the report notebooks under papermill ---------------------------------------------------------------------
@pytest.mark.parametrize('nb', ['paper_tables', 'paper_figures'])
def test_report_notebooks_are_skipped_by_nbdev_test_and_keep_parameters(nb):
    from fastcore.nbio import nb_frontmatter, read_nb
    path = REPO / 'nbs' / f'{nb}.ipynb'
    assert nb_frontmatter(read_nb(path)).get('skip_exec') is True
    cells = json.loads(path.read_text())['cells']
    tagged = [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(tagged) == 1 and "results_dir = 'results'" in ''.join(tagged[0]['source'])


@pytest.mark.slow
def test_papermill_runs_both_report_notebooks(results_dir, tmp_path):
    papermill = pytest.importorskip('papermill')
    out = tmp_path / 'reports'
    for nb in ('paper_tables', 'paper_figures'):
        papermill.execute_notebook(str(REPO / 'nbs' / f'{nb}.ipynb'), str(tmp_path / f'{nb}.out.ipynb'), kernel_name='python3',
                                   parameters={'results_dir': str(results_dir), 'out_dir': str(out)}, progress_bar=False,
                                   cwd=str(tmp_path))
    for name in ('table1', 'table2', 'table3', 'mini_table'):
        for ext in ('md', 'tex', 'csv'): assert (out / f'{name}.{ext}').stat().st_size > 0
        assert (out / f'{name}_long.csv').stat().st_size > 0
    assert '72.90 ± 0.30 (n=3)' in (out / 'table1.csv').read_text()
    for name in ('figure5_self_training', 'figure6_qualitative', 'figure7_overlap'):
        for ext in ('png', 'pdf'): assert (out / f'{name}.{ext}').stat().st_size > 1000


# ---- provenance: generated data never shows as a paper measurement (issue 12, item 7) ------------------------------
def test_generated_runs_stay_out_of_the_paper_tables_unless_asked(tmp_path):
    from cps_repro.report import GENERATED_TABLE, table_notes
    write_run(tmp_path, 'cps', 73.0, seed=0)
    write_run(tmp_path, 'cps', 0.0, seed=1, provenance='generated')          # a 4-iteration synthetic run
    t = paper_table(tmp_path, 'table1')
    assert cell(t, 'CPS w/o CutMix', 'R50', '1/8 (1323)') == '73.20 | 73.00 (n=1) | −0.20'
    t = paper_table(tmp_path, 'table1', include_generated=True)
    assert cell(t, 'CPS w/o CutMix', 'R50', '1/8 (1323)').startswith('73.20 | 36.50 ± 51.62 (n=2)‡')
    assert 'synthetic' in table_notes(t)
    assert set(load_results(tmp_path).table) == {'table1', GENERATED_TABLE}


def test_old_results_without_provenance_are_marked_and_synthetic_roots_detected(tmp_path):
    syn = tmp_path / 'syn'; syn.mkdir(); (syn / 'synthetic.json').write_text('{}')
    write_run(tmp_path / 'r', 'cps', 70.0, seed=0, provenance=None)
    write_run(tmp_path / 'r', 'cps', 1.0, seed=1, provenance=None, data_root=syn)
    write_run(tmp_path / 'r', 'cps', 71.0, seed=2, pretrained='none')
    r = load_results(tmp_path / 'r').set_index('seed')
    assert r.provenance.to_dict() == {0: 'unverified', 1: 'generated', 2: 'real'}
    assert r.marks.to_dict() == {0: '†', 1: '‡', 2: '*'}
    t = paper_table(tmp_path / 'r', 'table1')      # random initialisation is another recipe: its own row, named
    cps = t[t.Method.str.startswith('CPS w/o CutMix [recipe ') & (t.Backbone == 'R50')]['1/8 (1323)']
    assert sorted(cps) == ['73.20 | 70.00 (n=1)† | −3.20', '73.20 | 71.00 (n=1)* | −2.20']


def test_figures_never_call_generated_data_voc(tmp_path):
    from cps_repro.report import figure7_overlap
    write_run(tmp_path, 'cps', 10.0, provenance='generated')
    fig = figure7_overlap(tmp_path)
    titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else '']
    assert not any('VOC' in t for t in titles) and any('generated data' in t for t in titles)


def test_figure5_legend_does_not_overlap_the_title(results_dir):
    fig = figure5_self_training(results_dir)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig); canvas.draw(); r = canvas.get_renderer()
    legend, title = fig.legends[0].get_window_extent(r), fig._suptitle.get_window_extent(r)
    assert not legend.overlaps(title)


def test_the_same_run_id_on_other_data_is_not_a_duplicate(tmp_path):
    "Mini runs of data seeds 0 and 1 share run ids (issue 12, item 8): they are different runs."
    write_run(tmp_path / 'data_seed0', 'cps', 40.0, data_root='data/mini_seed0', provenance=None, name='mini_cps_1_16_seed0_x')
    write_run(tmp_path / 'data_seed1', 'cps', 41.0, data_root='data/mini_seed1', provenance=None, name='mini_cps_1_16_seed0_x')
    assert len(load_results(tmp_path)) == 2
    with pytest.warns(UserWarning, match='copied twice'):
        write_run(tmp_path / 'copy', 'cps', 40.0, data_root='data/mini_seed0', provenance=None, name='mini_cps_1_16_seed0_x')
        assert len(load_results(tmp_path)) == 2


# ---- one recipe per row -------------------------------------------------------------------------------------------
def _set_config(run_dir, **sections):
    p = Path(run_dir) / 'result.json'; r = json.loads(p.read_text())
    for k, v in sections.items(): r['config'][k] = {**r['config'].get(k, {}), **v}
    p.write_text(json.dumps(r))


def test_two_recipes_in_one_folder_are_two_named_groups_never_one_mean(tmp_path):
    for seed, v in enumerate([40.0, 44.0]):
        write_run(tmp_path / 'r', 'cps', v, seed=seed, preset='mini_cps', backbone='small_resnet', split='1_4', n_labeled=16)
        _set_config(write_run(tmp_path / 'r', 'cps', v + 10, seed=seed, preset='mini_cps', backbone='small_resnet', split='1_4',
                              n_labeled=16, name=f'long_{seed}'), train={'iters': 100})
    r = load_results(tmp_path / 'r')
    assert r.recipe.nunique() == 2 and r.groupby('recipe').size().tolist() == [2, 2]
    mt = mini_table(r)
    assert len(mt) == 2 and all(m.startswith('CPS w/o CutMix [recipe ') for m in mt.Method)
    assert {m.split('[recipe ')[1].rstrip(']') for m in mt.Method} == set(r.recipe)       # each group named by its recipe
    assert sorted(mt['1/4 (16)']) == ['42.00 ± 2.83 (n=2)', '52.00 ± 2.83 (n=2)']
    # the same in the paper tables and the figures: a real-data method with two recipes is two rows / two hues
    for seed, v in enumerate([70.0, 72.0]):
        write_run(tmp_path / 'p', 'cps', v, seed=seed)
        _set_config(write_run(tmp_path / 'p', 'cps', v - 20, seed=seed, name=f'short_{seed}'), train={'iters': 100})
    t1 = paper_table(tmp_path / 'p', 'table1', long=True)
    rows = t1[t1.method.str.startswith('CPS w/o CutMix') & (t1.backbone == 'R50') & (t1.split == '1/8')]
    assert sorted(rows['mean']) == [51.0, 71.0] and rows.n.tolist() == [2, 2]
    fig = figure7_overlap(tmp_path / 'p')
    assert len([t for t in fig.axes[0].get_legend_handles_labels()[1] if t.startswith('CPS w/o CutMix [recipe ')]) == 2


def test_recipe_of_an_old_result_is_computed_from_its_config_and_earlier_runs_stay_apart(tmp_path):
    from cps_repro.config import recipe_id
    from cps_repro.presets import preset
    cfg = preset('mini_cps', '1_4')
    d = write_run(tmp_path / 'r', 'cps', 41.0, preset='mini_cps', backbone='small_resnet', split='1_4', n_labeled=500)
    p = d / 'result.json'; res = json.loads(p.read_text()); res['config'] = cfg.to_dict(); res['n_unlabeled'] = 1500
    p.write_text(json.dumps(res))                        # a result.json written before runs recorded their recipe
    write_run(tmp_path / 'r' / 'earlier', 'cps', 1.0, preset='mini_cps', backbone='small_resnet', split='1_4', n_labeled=500, name='old')
    r = load_results(tmp_path / 'r')
    new = r[~r.earlier].iloc[0]
    assert new.recipe == recipe_id(cfg, 2000) and new.label == 'CPS w/o CutMix · balanced · ramp 40%' and new.eval_set == 'val'
    assert r.earlier.tolist().count(True) == 1
    assert mini_table(r)['1/4 (500)'].tolist() == ['41.00 (n=1)']                           # history left out
    assert mini_table(r[r.earlier], include_earlier=True)['1/4 (500)'].tolist() == ['1.00 (n=1)']   # shown apart


def test_the_committed_mini_results_are_never_pooled_across_recipes():
    r = load_results(REPO / 'nbs' / 'mini_results')
    current = r[~r.earlier]
    assert current.recipe.nunique() == current.groupby('method').ngroups                # one recipe per method
    assert r[r.earlier].recipe.isin(current.recipe).sum() == 0                            # the 2,000-image runs differ
    long = mini_table(r, long=True)
    table0 = pd.read_csv(REPO / 'nbs' / 'mini_results' / 'data_seed0' / 'mini_table.csv')
    sup = table0[(table0.method == 'supervised') & (table0.split == '1_16')].miou
    row = long[(long.method == 'Supervised') & (long.split == '1/16')].iloc[0]
    assert row.n == len(sup) and math.isclose(row['mean'], sup.mean()) and math.isclose(row['std'], sup.std())
