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
def _own_folder(root, n=10, classes=5):
    "A folder dataset (images/, masks/) of `n` random 32x32 images whose masks use classes 0..classes-1."
    (root / 'images').mkdir(parents=True); (root / 'masks').mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / 'images' / f'im{i}.png')
        Image.fromarray(rng.integers(0, classes, (32, 32), dtype=np.uint8)).save(root / 'masks' / f'im{i}.png')
    return root


def _own_train(capsys, root, tmp_path, lists, num_classes=5):
    for name, ids in lists.items(): (root / f'{name}.txt').write_text(''.join(f'{i}\n' for i in ids))
    return run(capsys, 'train', '--preset', 'mini_cps', '--data-root', root, '--own-data', *(f'{k}.txt' for k in lists),
               '--num-classes', num_classes, '--out-dir', tmp_path / 'r', '--no-progress', '--set', *TINY, 'iters=2')


def test_lists_that_change_what_a_run_measures_are_refused_naming_the_ids(tmp_path, capsys):
    "Issue 26: duplicate ids were counted twice; val ids in the labeled list, or one list for both, were accepted."
    root = _own_folder(tmp_path / 'mine')
    ok = {'labeled': ['im0', 'im1', 'im2', 'im3'], 'unlabeled': ['im4', 'im5'], 'val': ['im6', 'im7', 'im8', 'im9']}
    code, _, err = _own_train(capsys, root, tmp_path, {**ok, 'labeled': ['im0', 'im1', 'im2', 'im1', 'im3']})
    assert code == 2 and 'more than once: im1' in err and 'labeled.txt' in err and len(err.splitlines()) == 1, err
    code, _, err = _own_train(capsys, root, tmp_path, {**ok, 'labeled': ['im0', 'im1', 'im6', 'im7']})
    assert code == 2 and 'im6, im7' in err and 'validation ids' in err, err
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--data-root', root, '--own-data', 'labeled.txt',
                       'unlabeled.txt', 'labeled.txt', '--num-classes', 5, '--out-dir', tmp_path / 'r', '--no-progress',
                       '--set', *TINY, 'iters=2')
    assert code == 2 and 'both the labeled and the validation list' in err, err
    assert not (tmp_path / 'r').exists() or not list((tmp_path / 'r').glob('*/checkpoint.pt'))
    code, _, err = _own_train(capsys, root, tmp_path, {**ok, 'unlabeled': ['im4', 'im5', 'im9']})
    assert code == 0 and 'cps-repro: warning:' in err and 'unlabeled list' in err and 'im9' in err, err


def test_num_classes_above_what_the_masks_hold_is_a_warning(tmp_path, capsys):
    "Issue 26: --num-classes 50 on 5-class masks trained and reported a lower mIoU without a word."
    root = _own_folder(tmp_path / 'mine')
    lists = {'labeled': ['im0', 'im1', 'im2', 'im3'], 'unlabeled': ['im4', 'im5'], 'val': ['im6', 'im7', 'im8', 'im9']}
    k = 1 + max(int(np.asarray(Image.open(root / 'masks' / f'{i}.png')).max()) for i in lists['val'])
    code, _, err = _own_train(capsys, root, tmp_path, lists, num_classes=50)
    assert code == 0 and f'data.num_classes=50' in err and f'--num-classes {k}' in err, err
    code, _, err = _own_train(capsys, root, tmp_path / 'again', lists, num_classes=k)
    assert code == 0 and 'warning' not in err, err


def test_a_damaged_validation_image_stops_the_run_before_training(tmp_path, capsys):
    "Issue 26: a bad validation image was found only at the first evaluation, thousands of iterations in."
    root = _own_folder(tmp_path / 'mine')
    bad = root / 'images' / 'im8.png'
    bad.write_bytes(bad.read_bytes()[:60])                    # truncated
    lists = {'labeled': ['im0', 'im1', 'im2', 'im3'], 'unlabeled': ['im4', 'im5'], 'val': ['im6', 'im7', 'im8', 'im9']}
    code, _, err = _own_train(capsys, root, tmp_path, lists)
    assert code == 2 and str(bad) in err and 'Nothing was trained' in err and len(err.splitlines()) == 1, err
    assert not list((tmp_path / 'r').glob('*/metrics.jsonl')) or not any(p.read_text() for p in (tmp_path / 'r').glob('*/metrics.jsonl'))


def test_a_bug_keeps_its_traceback_while_bad_input_is_one_line(syn, tmp_path, capsys):
    "Issue 26: the CLI turned a KeyError bug inside a method's loss into one line without a traceback."
    import dataclasses
    from cps_repro.methods import Method, register_method, unregister_method, one_network
    from cps_repro.presets import preset, register_preset, unregister_preset
    from cps_repro.config import TrainConfig
    from cps_repro.methods.supervised import SupervisedParams
    def buggy_losses(ctx, batch): return {'sup': (batch['labelled']['image'].mean(), 1.0)}   # a typo: a KeyError
    register_method(Method('buggy', buggy_losses, SupervisedParams, one_network, nets=('net',)))
    base = preset('mini_supervised', '1_8')
    register_preset('mini_buggy', lambda split: dataclasses.replace(base, name='mini_buggy', train=dataclasses.replace(base.train, method='buggy')))
    try:
        with pytest.raises(KeyError, match='labelled'):
            main(['train', '--preset', 'mini_buggy', '--data-root', str(syn), '--out-dir', str(tmp_path), '--no-progress',
                  '--set', *TINY, 'iters=2'])
    finally: unregister_preset('mini_buggy'); unregister_method('buggy')
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--set', 'iters=abc')      # bad input: still one line
    assert code == 2 and len(err.splitlines()) == 1


@pytest.mark.parametrize('argv, needle', [
    (['presets', '--split', 'abc'], "Unknown split 'abc'"),
    (['presets', '--verbose', '--split', 'abc'], "Unknown split 'abc'"),
    (['train', '--preset', 'mini_cps', '--device', 'tpu'], '--device tpu: expected cpu, cuda or cuda:N'),
    (['eval', '--checkpoint', 'x.pt', '--device', 'tpu'], '--device tpu'),
])
def test_inputs_that_were_accepted_or_tracebacks_are_one_line(argv, needle, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and len(err.splitlines()) == 1 and not out, (out, err)


def test_data_check_num_classes_must_be_a_class_count(syn, capsys):
    with pytest.raises(SystemExit) as e: main(['data', 'check', '--dataset', 'voc', '--root', str(syn), '--num-classes', '0'])
    assert e.value.code == 2 and "'0': expected an integer >= 2" in capsys.readouterr().err


def test_data_check_of_a_folder_as_the_readme_writes_it(tmp_path, capsys):
    "Issue 26: the README's `data check --dataset folder --root my_data --list labeled.txt` failed without --num-classes."
    root = _own_folder(tmp_path / 'my_data', n=4, classes=3)
    (root / 'labeled.txt').write_text('im0\nim1\nim2\nim3\n')
    code, out, err = run(capsys, 'data', 'check', '--dataset', 'folder', '--root', root, '--list', 'labeled.txt')
    assert code == 0 and 'OK' in out and '--num-classes 3' in out, (out, err)
    (root / 'images' / 'im1.png').write_bytes(b'garbage')
    code, out, err = run(capsys, 'data', 'check', '--dataset', 'folder', '--root', root, '--list', 'labeled.txt')
    assert code == 1 and 'im1.png' in out and 'prepare_voc' not in out and 'remove its id from the list' in out


def test_synth_refuses_a_huge_size_and_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, 'synth', tmp_path / 'big', '--size', 100000, '--no-progress')
    assert code == 2 and '--size' in err and '2048' in err and len(err.splitlines()) == 1 and not (tmp_path / 'big').exists()
    import cps_repro.synthetic as synthetic
    written = []
    def fail_on_third(job):
        written.append(job)
        if len(written) == 3: raise MemoryError('simulated')
        return real(job)
    real = synthetic._write_scene
    monkeypatch.setattr(synthetic, '_write_scene', fail_on_third)
    (tmp_path / 'kept').mkdir(); (tmp_path / 'kept' / 'notes.txt').write_text('mine')
    for out in (tmp_path / 'new', tmp_path / 'kept'):
        with pytest.raises(MemoryError): synthesize(out, n=8, n_val=2, size=32, progress=False)
        written.clear()
    assert not (tmp_path / 'new').exists() and [p.name for p in (tmp_path / 'kept').iterdir()] == ['notes.txt']
    monkeypatch.undo()
    code, _, err = run(capsys, 'synth', tmp_path / 'kept', '--n', 8, '--n-val', 2, '--size', 32, '--no-progress')
    assert code == 0, err                                      # the re-run is not blocked by a partial VOCdevkit/


def test_synth_help_says_the_validation_fraction_the_code_uses():
    from cps_repro.synthetic import VAL_FRACTION
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, '-m', 'cps_repro.cli', 'synth', '--help'], capture_output=True, text=True, env=env).stdout
    assert f'{VAL_FRACTION:g} of --n' in ' '.join(out.split()) and 'quarter' not in out


def test_ctrl_c_before_the_first_checkpoint_does_not_promise_a_resume(syn, tmp_path, capsys, monkeypatch):
    import cps_repro.train
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(cps_repro.train, 'train', interrupted)
    code, _, err = run(capsys, 'train', '--preset', 'mini_cps', '--data-root', syn, '--out-dir', tmp_path, '--no-progress',
                       '--set', *TINY, 'iters=2')
    assert code == 130 and 'before the first checkpoint' in err and 'resume' not in err and len(err.splitlines()) == 1, err


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    "Issue 26: a Ctrl-C while PyTorch loads printed a traceback through the import machinery."
    from cps_repro.console import run as console
    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == 'cps_repro.cli': raise KeyboardInterrupt
    monkeypatch.delitem(sys.modules, 'cps_repro.cli')
    monkeypatch.setattr(sys, 'meta_path', [CtrlC(), *sys.meta_path])
    assert console() == 130
    err = capsys.readouterr().err
    assert err.startswith('cps-repro: interrupted while starting') and len(err.splitlines()) == 1
    tomlp = (Path(__file__).resolve().parents[1] / 'pyproject.toml').read_text()
    assert 'cps-repro = "cps_repro.console:run"' in tomlp


def test_evaluation_shows_its_progress_and_the_library_says_through_logging(syn, tmp_path, capsys):
    "Issue 26: evaluation inside train and `cps-repro eval` showed no progress; train.py printed."
    import ipykernel       # noqa: F401  other tests in this process import it: a log still gets lines, not a bar
    argv = ['train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', syn, '--out-dir', tmp_path, '--set', *TINY, 'iters=2']
    code, out, err = run(capsys, *argv)
    n_val = len((syn / 'VOCdevkit' / 'VOC2012' / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split())
    assert code == 0 and f'evaluate: {n_val}/{n_val} images' in err, err          # stderr is no terminal here: lines
    code, out, err = run(capsys, *argv)
    assert code == 0 and 'is finished already' in out                               # logging, shown by the command
    code, out, err = run(capsys, 'eval', '--run', next(tmp_path.glob('mini_cps_*')))
    assert code == 0 and f'evaluate: {n_val}/{n_val} images' in err
    code, out, err = run(capsys, 'eval', '--run', next(tmp_path.glob('mini_cps_*')), '--set', 'data.num_classes=7')
    errors = [l for l in err.splitlines() if l.startswith('cps-repro: error:')]       # was a bare state_dict size mismatch
    assert code == 2 and len(errors) == 1 and 'num_classes' in errors[0] and 'only eval.' in errors[0], err
    import cps_repro.train
    assert 'print(' not in Path(cps_repro.train.__file__).read_text()


def test_an_input_error_raised_in_a_loader_worker_stays_one_line():
    "DataLoader workers re-raise an exception in the main process from torch's code: its type must say 'bad input'."
    import torch
    from torch._utils import ExceptionWrapper
    from cps_repro.cli import input_error
    from cps_repro.loaders import eval_collate
    items = [{'image': torch.zeros(3, 4, 4), 'id': 'a'}, {'image': torch.zeros(3, 5, 5), 'id': 'b'}]
    try: eval_collate(items)
    except ValueError: wrapper = ExceptionWrapper(where='in DataLoader worker process 0')
    with pytest.raises(ValueError) as e: wrapper.reraise()
    assert input_error(e.value) and 'eval.batch_size=2' in str(e.value)


def test_a_run_directory_of_another_config_names_the_differing_keys(syn, tmp_path, capsys):
    "Issue 26: 'holds another run (its config.json differs)' did not say which key differs."
    argv = ['train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', syn, '--run-dir', tmp_path / 'run',
            '--no-progress', '--set', *TINY, 'iters=2']
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, *argv[:-1], 'iters=2', 'seed=9')
    assert code == 2 and 'train.seed (0 there, 9 here)' in err and len(err.splitlines()) == 1, err


def test_own_data_run_ids_carry_no_split(tmp_path):
    "Issue 26: own-data run ids carried the preset's split, which own lists never use."
    from cps_repro.cli import own_data
    from cps_repro.presets import preset
    root = _own_folder(tmp_path / 'mine')
    for name, ids in {'labeled': ['im0', 'im1'], 'unlabeled': ['im2'], 'val': ['im3']}.items():
        (root / f'{name}.txt').write_text(''.join(f'{i}\n' for i in ids))
    lists = [root / f'{n}.txt' for n in ('labeled', 'unlabeled', 'val')]
    a, b = (own_data(preset('mini_cps', s), root, lists, 5) for s in ('1_8', '1_16'))
    assert a.run_id == b.run_id and '_own_seed0_' in a.run_id and '1_8' not in a.run_id, (a.run_id, b.run_id)
