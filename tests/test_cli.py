"The `cps-repro` command: what a user types, and the one-line messages for what goes wrong (issue 12)."
import json, os, stat, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cps_repro.cli import main
from cps_repro.synthetic import synthesize

TINY = ['eval_every=2', 'checkpoint_every=2', 'batch_size=2', 'workers=0']


@pytest.fixture(scope='module')
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli') / 'syn'
    synthesize(root, n=24, n_val=4, size=32, progress=False)
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_repeated_set_flags_all_apply(syn, tmp_path, capsys):
    code, out, err = run(capsys, 'train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', syn, '--out-dir',
                         tmp_path, '--no-progress', '--set', *TINY, '--set', 'seed=9', '--set', 'eval_every=2',
                         '--set', 'iters=2')
    assert code == 2 and 'set twice' in err                    # eval_every given twice: an error naming both values
    code, out, err = run(capsys, 'train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', syn, '--out-dir',
                         tmp_path, '--no-progress', '--set', 'checkpoint_every=2', 'batch_size=2', 'workers=0',
                         '--set', 'seed=9', '--set', 'eval_every=2', '--set', 'iters=2')
    assert code == 0, err
    res = json.loads(next(tmp_path.glob('*/result.json')).read_text())
    t = res['config']['train']
    assert (t['seed'], t['eval_every'], t['iters']) == (9, 2, 2)


def test_config_file_rules(syn, tmp_path, capsys):
    cfg = tmp_path / 'c.json'
    code, out, err = run(capsys, 'train', '--preset', 'mini_cps', '--split', '1_4', '--dump-config', cfg)
    assert code == 0 and cfg.is_file()
    code, _, err = run(capsys, 'train', '--config', cfg, '--split', '1_8', '--data-root', syn)
    assert code == 2 and '--split 1_8 differs' in err
    d = json.loads(cfg.read_text()); del d['optim']; cfg.write_text(json.dumps(d))
    code, _, err = run(capsys, 'train', '--config', cfg, '--data-root', syn)
    assert code == 2 and "missing section 'optim'" in err


def test_preset_keys_and_bad_values_are_named(capsys):
    for sets, msg in [(['split=92'], '--split 92'), (['method=cps'], 'method builds the preset'),
                      (['backbone=resnet101'], 'backbone builds the preset'), (['data.dataset=cityscapes'], 'dataset'),
                      (['iters=abc'], 'iters=abc: expected an integer'), (['cps_weight=nan'], 'finite')]:
        code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--set', *sets)
        assert code == 2 and msg in err and len(err.splitlines()) == 1, (sets, err)


def test_paper_preset_without_weights_stops_before_data(tmp_path, capsys):
    code, _, err = run(capsys, 'train', '--preset', 'voc_cps_resnet101', '--data-root', tmp_path / 'nothing')
    assert code == 2 and 'weights/resnet101_v1c.pth' in err and 'Preparing the data' in err
    code, _, err = run(capsys, 'train', '--preset', 'voc_cps', '--set', 'pretrained=none', '--device', 'cpu',
                       '--data-root', tmp_path / 'nothing')
    assert code == 2 and 'exp_mini' in err                     # paper scale on a CPU


def test_device_cuda_without_gpu(capsys):
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--device', 'cuda')
    assert code == 2 and 'no CUDA GPU' in err


def test_wrong_data_root_is_blamed_on_the_root(tmp_path, capsys):
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--data-root', tmp_path / 'missing')
    assert code == 2 and 'data root' in err and 'does not exist' in err and 'artition' not in err
    (tmp_path / 'empty').mkdir()
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--data-root', tmp_path / 'empty')
    assert code == 2 and 'holds no voc dataset' in err


def test_out_dir_file_or_read_only(syn, tmp_path, capsys):
    (tmp_path / 'f').write_text('x')
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--data-root', syn, '--out-dir', tmp_path / 'f')
    assert code == 2 and 'is a file' in err
    if os.geteuid() == 0: return                                # root writes anywhere
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--data-root', syn, '--out-dir', ro / 'results')
        assert code == 2 and 'not writable' in err
    finally: ro.chmod(stat.S_IRWXU)


def test_corrupt_checkpoint_is_one_line(syn, tmp_path, capsys):
    from cps_repro.cli import experiment_config
    cfg = experiment_config('mini_cps', '1_8', str(syn), [TINY + ['iters=2']])
    run_dir = tmp_path / cfg.run_id; run_dir.mkdir(parents=True)
    (run_dir / 'checkpoint.pt').write_bytes(b'not a checkpoint')
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', syn, '--out-dir',
                       tmp_path, '--set', *TINY, 'iters=2')
    assert code == 2 and 'checkpoint.pt is damaged' in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, 'eval', '--checkpoint', run_dir / 'checkpoint.pt')
    assert code == 2 and 'not a readable checkpoint' in err and len(err.splitlines()) == 1


def test_eval_out_into_a_missing_folder_fails_first(tmp_path, capsys):
    code, _, err = run(capsys, 'eval', '--checkpoint', tmp_path / 'none.pt', '--out', tmp_path / 'no' / 'm.json')
    assert code == 2 and 'nothing was evaluated' in err


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    import cps_repro.cli as cli
    def interrupted(a): raise KeyboardInterrupt
    monkeypatch.setattr(cli, '_cmd_presets', interrupted)
    code, _, err = run(capsys, 'presets')
    assert code == 130 and err.strip().startswith('cps-repro: interrupted') and len(err.splitlines()) == 1


def test_train_on_your_own_folder(tmp_path, capsys):
    root = tmp_path / 'mine'; (root / 'images').mkdir(parents=True); (root / 'masks').mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / 'images' / f'im{i}.png')
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(root / 'masks' / f'im{i}.png')
    (root / 'labeled.txt').write_text('im0\nim1\nim2\nim3\n'); (root / 'unlabeled.txt').write_text('im4\nim5\n')
    (root / 'val.txt').write_text('im6\nim7\n')
    code, out, err = run(capsys, 'train', '--preset', 'mini_cps', '--data-root', root, '--own-data', 'labeled.txt',
                         'unlabeled.txt', 'val.txt', '--num-classes', 3, '--out-dir', tmp_path / 'r', '--no-progress',
                         '--set', *TINY, 'iters=2')
    assert code == 0, err
    res = json.loads(next((tmp_path / 'r').glob('*/result.json')).read_text())
    assert res['config']['data']['dataset'] == 'folder' and res['config']['data']['num_classes'] == 3


def test_synth_and_mini_pretrain_help():
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, '-m', 'cps_repro.cli', 'synth', '--help'], capture_output=True, text=True, env=env).stdout
    assert '--no-progress' in out and 'default: 2000' in out and 'synthetic.json' in out
    out = subprocess.run([sys.executable, '-m', 'cps_repro.cli', 'mini', 'pretrain', '--help'], capture_output=True,
                         text=True, env=env).stdout
    assert 'corpus training images' in out and 'default: 1500' in out


def test_synth_no_progress(tmp_path, capsys):
    code, out, err = run(capsys, 'synth', tmp_path / 's', '--n', 8, '--n-val', 2, '--size', 32, '--no-progress')
    assert code == 0 and 'synthesizing' not in err and (tmp_path / 's' / 'synthetic.json').is_file()


def test_damaged_list_file_is_one_line(tmp_path, capsys):
    root = tmp_path / 'syn'
    synthesize(root, n=24, n_val=4, size=32, progress=False)
    lab = root / 'partitions' / 'pascal_voc' / 'subset_train_aug' / 'train_aug_labeled_1-8.txt'
    lab.write_text('no_such_image\n\x00\x01garbage\n')
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', root, '--out-dir',
                       tmp_path / 'r', '--no-progress', '--set', *TINY, 'iters=2')
    assert code == 2 and err.startswith('cps-repro: error:') and len(err.strip().splitlines()) == 1, err
    assert 'Traceback' not in err


# ---- issue 26: eval says what it evaluates ------------------------------------------------------------------------
@pytest.fixture(scope='module')
def trained(syn, tmp_path_factory):
    out = tmp_path_factory.mktemp('evalrun')
    assert main(['train', '--preset', 'mini_supervised', '--split', '1_8', '--data-root', str(syn), '--out-dir', str(out),
                 '--no-progress', '--set', *TINY, 'iters=2']) == 0
    return next(out.glob('*/checkpoint.pt')).parent


def test_eval_run_with_another_presets_config_is_refused_naming_the_keys(trained, tmp_path, capsys):
    import shutil
    from cps_repro.presets import preset
    rdir = tmp_path / 'run'; shutil.copytree(trained, rdir)
    preset('mini_cps', '1_8').to_json(rdir / 'config.json')
    code, _, err = run(capsys, 'eval', '--run', rdir)
    assert code == 2 and 'config.json' in err and 'train.method' in err and len(err.splitlines()) == 1


def test_eval_on_other_data_says_so(trained, syn, tmp_path, capsys):
    other = tmp_path / 'other'; synthesize(other, n=24, n_val=4, size=32, seed=11, progress=False)
    code, out, err = run(capsys, 'eval', '--checkpoint', trained / 'checkpoint.pt', '--data-root', other,
                         '--out', tmp_path / 'm.json')
    assert code == 0, err
    assert 'other data' in out and str(other) in out
    assert json.loads((tmp_path / 'm.json').read_text())['data']['root'] == str(other)
    code, out, err = run(capsys, 'eval', '--run', trained)                # its own data: nothing to say
    assert code == 0 and 'other data' not in out


@pytest.mark.parametrize('key', ['iters=5', 'seed=3', 'data.num_classes=3', 'optim.lr=0.1'])
def test_eval_refuses_training_overrides(trained, capsys, key):
    code, _, err = run(capsys, 'eval', '--run', trained, '--set', key)
    assert code == 2 and 'only eval.' in err and key.split('=')[0].split('.')[-1] in err and len(err.splitlines()) == 1


def test_eval_accepts_evaluation_overrides(trained, capsys):
    code, out, err = run(capsys, 'eval', '--run', trained, '--set', 'eval.flip=true', 'workers=0')
    assert code == 0, err
