"The collapse diagnostics (chapter 11b_collapse): tracing leaves training untouched, the interventions, the checks, the CLI."
import math

import pandas as pd
import pytest
import torch

from cps_repro.collapse import (DEAD_IOU, DiagnosticTrainer, Intervention, check_lists, check_streams, check_weights,
                                main, paired_table, probe_set, probe_stats, regenerated_lists, stream_ids,
                                summarize_curve, trace, val_stats)
from cps_repro.data import read_entries
from cps_repro.mini import ensure_dataset
from cps_repro.presets import experiment_config
from cps_repro.train import Trainer

SETS = ['iters=8', 'hparams.rampup=0', 'hparams.balance=0', 'eval_every=8', 'checkpoint_every=8', 'seed=5']

@pytest.fixture(scope='module')
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return ensure_dataset(tmp_path_factory.mktemp('collapse') / 'data', seed=3, n=32, n_val=8)

def cfg_of(root, *extra, preset='mini_cps', split='1_4'):
    sets = SETS if preset != 'mini_supervised' else [s for s in SETS if not s.startswith('hparams.')]
    return experiment_config(preset, split, str(root), sets + list(extra))

def weights(nets):
    return [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]

def same(a, b):
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)

def test_tracing_leaves_the_training_untouched(root):
    "Recording the forwards, probing and evaluating between steps give the networks of a plain Trainer, bit for bit."
    cfg = cfg_of(root)
    plain = Trainer(cfg, device='cpu', progress=False)
    diag = DiagnosticTrainer(cfg, device='cpu', progress=False)
    images, labels = probe_set(cfg, n=8)
    for _ in range(3):
        plain.step(); diag.step()
        stats = {**diag.batch_stats(), **probe_stats(diag.nets, images, labels, 5), **val_stats(diag)}
    assert same(weights(plain.nets), weights(diag.nets))
    for k in (1, 2):
        assert math.isclose(sum(stats[f'batch_share{k}_{c}'] for c in range(5)), 1.0, rel_tol=1e-9)
        assert math.isclose(sum(stats[f'probe_share{k}_{c}'] for c in range(5)), 1.0, rel_tol=1e-9)
    assert 0 <= stats['batch_agree'] <= 1 and 0 <= stats['probe_agree'] <= 1 and len([k for k in stats if k.startswith('val_iou2_')]) == 5

def test_warmup_holds_lambda_at_zero_then_releases_it(root):
    cfg = cfg_of(root)
    diag = DiagnosticTrainer(cfg, Intervention(warmup=2), device='cpu', progress=False)
    zero = Trainer(cfg_of(root, 'hparams.weight=0'), device='cpu', progress=False)
    lams = []
    for _ in range(2): diag.step(); zero.step(); lams.append(diag.cps_lambda())
    assert same(weights(diag.nets), weights(zero.nets))           # the warm-up is the λ = 0 run
    diag.step(); lams.append(diag.cps_lambda())
    assert lams == [0.0, 0.0, 1.5]

def test_eval_mode_pseudo_labels_change_the_targets_only(root):
    cfg = cfg_of(root)
    diag = DiagnosticTrainer(cfg, Intervention(pseudo_bn='eval'), device='cpu', progress=False)
    plain = Trainer(cfg, device='cpu', progress=False)
    diag.step(); plain.step()
    modes = [training for _, _, training, _ in diag.last_context.record]
    assert modes.count(True) == 4 and modes.count(False) == 4       # 4 training forwards + labeled/unlabeled eval forwards of 2 nets
    assert all(n.training for n in diag.nets)
    assert not same(weights(diag.nets), weights(plain.nets))
    assert set(diag.batch_stats()) >= {'batch_share1_0', 'batch_agree'}

def test_bad_interventions_are_refused(root):
    with pytest.raises(ValueError, match='warmup'): Intervention(warmup=-1)
    with pytest.raises(ValueError, match="pseudo_bn"): Intervention(pseudo_bn='running')
    with pytest.raises(ValueError, match="plain CPS"):
        DiagnosticTrainer(cfg_of(root, preset='mini_supervised'), Intervention(pseudo_bn='eval'), device='cpu')
    with pytest.raises(ValueError, match='no λ'):
        DiagnosticTrainer(cfg_of(root, preset='mini_supervised'), Intervention(warmup=3), device='cpu')

def test_check_lists_sees_a_labeled_image_in_the_unlabeled_list(root, tmp_path):
    ok = check_lists(cfg_of(root))
    assert ok['labeled_in_unlabeled'] == 0 and ok['train_in_val'] == 0 and ok['duplicates'] == 0 and ok['covers_train_aug']
    lab = read_entries(root / 'partitions/pascal_voc/subset_train_aug/train_aug_labeled_1-4.txt')
    unl = read_entries(root / 'partitions/pascal_voc/subset_train_aug/train_aug_unlabeled_1-4.txt')
    (tmp_path / 'u.txt').write_text('\n'.join(unl + lab[:2] + unl[:1]) + '\n')
    bad = check_lists(cfg_of(root, f"data.unlabeled_list={tmp_path / 'u.txt'}"))
    assert bad['labeled_in_unlabeled'] == 2 and bad['duplicates'] == 1

def test_stream_replay_matches_what_the_streams_deliver(root):
    tr = Trainer(cfg_of(root), device='cpu', progress=False)
    want_l, want_u = stream_ids(tr.data.labeled, 5), stream_ids(tr.data.unlabeled, 5)
    got_l = [i for _ in range(5) for i in next(tr.data.labeled)['id']]
    got_u = [i for _ in range(5) for i in next(tr.data.unlabeled)['id']]
    assert (want_l, want_u) == (got_l, got_u)
    tr2 = Trainer(cfg_of(root), device='cpu', progress=False)
    s = check_streams(tr2, 6)
    assert s['labeled_ids_in_unlabeled_stream'] == 0 and s['unlabeled_seen'] == tr2.data.n_unlabeled and s['labeled_seen'] == tr2.data.n_labeled
    assert check_weights(tr2) == {'pretrained_loaded': True}

def test_regenerated_lists(root, tmp_path):
    ids = read_entries(root / 'VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt')
    same_seed = [read_entries(p) for p in regenerated_lists(root, '1_4', 3, tmp_path)]   # the generator's own split seed
    assert same_seed == [read_entries(root / f'partitions/pascal_voc/subset_train_aug/train_aug_{r}_1-4.txt') for r in ('labeled', 'unlabeled')]
    lab, unl = (read_entries(p) for p in regenerated_lists(root, '1_4', 4, tmp_path))
    assert len(lab) == math.ceil(len(ids) / 4) and not set(lab) & set(unl) and set(lab) | set(unl) == set(ids)
    assert lab != same_seed[0]

def test_summarize_curve_names_the_lost_classes():
    names = ['background', 'a', 'b']
    def r(it, ious, share0): return {'iter': it, 'val_miou1': sum(ious) / 3, **{f'val_iou1_{c}': v for c, v in enumerate(ious)},
                                    'probe_share1_0': share0, 'probe_share1_1': 1 - share0, 'probe_share1_2': 0.0,
                                    'probe_acc1': 0.5, 'probe_gt_0': 0.5}
    s = summarize_curve([r(0, [50, 10, 10], 0.4), r(500, [60, 20, 1], 0.9), r(1000, [70, 30, DEAD_IOU - 0.1], 0.8)], names)
    assert s['lost_classes'] == 'b' and s['n_lost'] == 1 and s['miou_500'] == 27.0 and s['iters'] == 1000
    assert math.isclose(s['probe_fg_min'], 0.1) and math.isclose(s['probe_fg_final'], 0.2) and s['probe_min_class_share'] == 0.0

def test_cli_run_writes_the_curve_and_one_line_per_name(root, tmp_path):
    args = ['run', 'tiny', '--split', '1_4', '--data-root', str(root), '--set', *SETS, '--iters', '4', '--log-every', '2',
            '--eval-every', '2', '--out', str(tmp_path), '--group', 'baseline', '--note', 'a test', '--no-progress']
    assert main(args) == 0 and main(args) == 0
    curve, runs = pd.read_csv(tmp_path / 'curves/tiny.csv'), pd.read_csv(tmp_path / 'runs.csv')
    assert curve['iter'].tolist() == [0, 2, 4] and curve['val_miou1'].notna().all() and math.isnan(curve['lambda'][0])
    assert len(runs) == 1 and runs['command'][0].startswith('python -m cps_repro.collapse run tiny') and runs['data_seed'][0] == 3
    assert paired_table(runs, {'tiny': curve}, ['background', 'stripes', 'checker', 'dots', 'solid'], at=2)['iters'].tolist() == [2]
    with pytest.raises(ValueError, match='exceeds'): trace(cfg_of(root), iters=9)
