"Presets: run identity that travels (packaged assets by name + content hash), the preset registry."
import shutil, subprocess, sys
from pathlib import Path

import pytest

from cps_repro.presets import preset, list_presets, register_preset
from cps_repro.packaged import asset_ref, resolve_asset, ASSETS_DIR

REPO = Path(__file__).resolve().parents[1]
_RUN_ID = "from cps_repro.presets import preset; print(preset('mini_cps', '1_16').run_id)"


def _run_id(package_parent: Path) -> str:
    env = {'PYTHONPATH': str(package_parent), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'}
    out = subprocess.run([sys.executable, '-c', _RUN_ID], cwd=package_parent, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_same_preset_has_the_same_run_id_in_two_copies_and_a_new_asset_changes_it(tmp_path):
    ignore = shutil.ignore_patterns('__pycache__')
    for k in ('a', 'b'): shutil.copytree(REPO / 'cps_repro', tmp_path / k / 'cps_repro', ignore=ignore)
    a, b = _run_id(tmp_path / 'a'), _run_id(tmp_path / 'b')
    assert a == b == preset('mini_cps', '1_16').run_id
    assert str(tmp_path) not in preset('mini_cps', '1_16').to_json()
    weights = tmp_path / 'b' / 'cps_repro' / 'assets' / 'small_resnet_s2_pretrained.pt'
    weights.write_bytes(weights.read_bytes() + b'regenerated')        # other content
    assert _run_id(tmp_path / 'b') != a


def test_an_asset_reference_refuses_other_content(tmp_path):
    (tmp_path / 'w.pt').write_bytes(b'one')
    ref = asset_ref('w.pt', tmp_path)
    assert resolve_asset(ref, tmp_path) == tmp_path / 'w.pt'
    (tmp_path / 'w.pt').write_bytes(b'two')
    with pytest.raises(ValueError, match='regenerated'): resolve_asset(ref, tmp_path)
    with pytest.raises(FileNotFoundError, match='missing.pt'): asset_ref('missing.pt', tmp_path)


def test_mini_pretrain_needs_an_output_path():
    from cps_repro.mini import main
    with pytest.raises(SystemExit): main(['pretrain'])


def test_preset_registry():
    assert 'mini_cps' in list_presets() and 'voc_cct_resnet101' in list_presets()
    with pytest.raises(ValueError, match='exists already'): register_preset('voc_cps', lambda split: None)
    with pytest.raises(ValueError, match='Unknown preset'): preset('voc_fixmatch')


_HALF = """
import logging, sys
logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)   # the trainer logs "Resuming ..."
from cps_repro.presets import experiment_config
from cps_repro.train import Trainer
from cps_repro.runs import prepare_run_dir
cfg = experiment_config('mini_cps', '1_4', sys.argv[1], ['iters=4', 'batch_size=2', 'eval_every=4', 'checkpoint_every=2',
                                                         'workers=0', 'eval.save_predictions=0'])
tr = Trainer(cfg, run_dir=sys.argv[2], progress=False)
if sys.argv[3] == 'half':
    prepare_run_dir(tr.run_dir, cfg)
    for _ in range(2): tr.step()
    tr.save_checkpoint()
else:
    r = tr.fit(); print(r['run_id'], r['iters'], open(sys.argv[2] + '/metrics.jsonl').read().count('loss/total'))
"""


def test_a_run_started_in_one_copy_resumes_in_the_other(tmp_path):
    from cps_repro.synthetic import synthesize
    synthesize(tmp_path / 'data', layout='voc', n=32, n_val=4, seed=0, size=32, progress=False)
    for k in ('a', 'b'): shutil.copytree(REPO / 'cps_repro', tmp_path / k / 'cps_repro', ignore=shutil.ignore_patterns('__pycache__'))
    run = str(tmp_path / 'run')
    def go(copy, what):
        env = {'PYTHONPATH': str(tmp_path / copy), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1', 'IN_TEST': '1'}
        out = subprocess.run([sys.executable, '-c', _HALF, str(tmp_path / 'data'), run, what], cwd=tmp_path / copy, env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout
    go('a', 'half')
    out = go('b', 'resume')
    assert 'from iteration 2' in out and out.split()[-2] == '4'   # iterations 1-2 in copy a, 3-4 resumed by copy b


# ---- the arms of the miniature -------------------------------------------------------------------------------------
def test_the_as_published_arm_is_the_paper_s_hyperparameters_and_the_forced_changes_live_in_one_dict(monkeypatch):
    from cps_repro import presets
    from cps_repro.overrides import apply_overrides
    arm = lambda a, r: apply_overrides(presets.mini_preset(presets.MINI_ARM_ROWS[a][r][0], '1_4'), presets.mini_arm_overrides(a, r)[1])
    cm = arm('published', 'cps_cutmix')
    assert (cm.hparams.weight, cm.hparams.mask, cm.hparams.n_boxes, cm.hparams.prop_range) == (1.0, 'box', 3, (0.25, 0.5))
    assert (cm.hparams.rampup, cm.hparams.balance, arm('published', 'cps').hparams.weight) == (0.0, 0.0, 1.5)
    assert presets.hparam_deviations(cm) == () and presets.hparam_deviations(arm('published', 'cps')) == ()
    assert set(presets.MINI_FORCED) | set(presets.MINI_TUNING) == set(presets.MINI_DEVIATIONS)
    # one more forced change (e.g. issue 28's learning rate) is one entry: every as-published run takes it, no tuned run
    monkeypatch.setitem(presets.MINI_FORCED, 'learning rate', ("the paper's effective lr", {'optim.lr': 0.0025, 'optim.nominal_lr': 0.0025}))
    for row in presets.MINI_ARM_ROWS['published']:
        c = arm('published', row)
        assert c.optim.lr == 0.0025 and "learning rate: the paper's effective lr" in c.notes
    assert all(arm('tuned', r).optim.lr == 0.02 for r in presets.MINI_ARM_ROWS['tuned'])


def test_tuned_rows_are_today_s_runs_and_their_names_come_from_their_settings():
    from cps_repro import presets
    from cps_repro.overrides import apply_overrides
    for row, (method, _) in presets.MINI_ARM_ROWS['tuned'].items():
        c = apply_overrides(presets.mini_preset(method, '1_8'), presets.mini_arm_overrides('tuned', row)[1])
        if row in ('supervised', 'cps', 'cps_cutmix'):
            assert c.run_id == presets.mini_preset(method, '1_8').run_id       # the committed runs, unchanged
    names = {r: presets.hparam_deviations(apply_overrides(presets.mini_preset(m, '1_8'), presets.mini_arm_overrides('tuned', r)[1]))
             for r, (m, _) in presets.MINI_ARM_ROWS['tuned'].items()}
    assert names == {'supervised': (), 'supervised_balanced': ('balanced',), 'cps': ('balanced', 'ramp 40%'),
                     'cps_cutmix': ('balanced', 'ramp 20%', 'half mask', 'λ 1.5'), 'self_training_balanced': ('balanced', 'ramp 40%')}
    with pytest.raises(ValueError, match="arm 'tuned' has no row 'fixmatch'|has no row"): presets.mini_arm_overrides('tuned', 'fixmatch')


def test_paper_presets_name_no_deviation():
    from cps_repro import presets
    for ds in ('voc', 'cityscapes'):
        for m in presets.PAPER_METHODS:
            for s in ('1_16', '1_2') + (('92', '732') if ds == 'voc' else ()):
                assert presets.hparam_deviations(preset(f'{ds}_{m}', s)) == (), (ds, m, s)
