"`cps-repro predict` / `cps_repro.predict`: a tiny trained mini run on a folder of generated JPEGs."
import argparse, contextlib, io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cps_repro.cli import main as cps_repro
from cps_repro.mini import ensure_dataset
from cps_repro.predict import (ImageReadError, add_predict_parser, cmd_predict, list_inputs, load_image, load_predictor,
                               predict)
from cps_repro.synthetic import SynthConfig, render_scene, scene_seed


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "A mini supervised run trained for 3 iterations on 8 generated images."
    work = tmp_path_factory.mktemp('predict')
    ensure_dataset(work / 'data', seed=5, n=8, n_val=2)
    rc = cps_repro(['train', '--preset', 'mini_supervised', '--split', '1_2', '--data-root', str(work / 'data'),
                    '--run-dir', str(work / 'run'), '--no-progress', '--device', 'cpu',
                    '--set', 'iters=3', 'batch_size=2', 'eval_every=1000', 'checkpoint_every=1000', 'eval.save_predictions=0'])
    assert rc == 0
    return work / 'run'


@pytest.fixture
def photos(tmp_path):
    "Generated JPEGs (two scenes, one 48 px), a grayscale one, a corrupt one and a text file that is not an image."
    d = tmp_path / 'photos'; d.mkdir()
    for i, size in enumerate([32, 32, 48]):
        Image.fromarray(render_scene(scene_seed(7, i), SynthConfig(size=size))[0]).save(d / f'scene{i}.jpg')
    Image.fromarray(render_scene(scene_seed(7, 9), SynthConfig(size=32))[0]).convert('L').save(d / 'gray.jpg')
    (d / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    (d / 'notes.txt').write_text('not an image')
    return d


def run_predict(argv):
    "`cps-repro predict ARGV` as the console script runs it: (exit code, stdout, stderr)."
    p = argparse.ArgumentParser(prog='cps-repro')
    add_predict_parser(p.add_subparsers(dest='command', required=True))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        a = p.parse_args(['predict', *argv])
        try: code = a.func(a)
        except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
            print(f"cps-repro: error: {e}", file=err); code = 2
    return code, out.getvalue(), err.getvalue()


def test_predict_folder_writes_masks_and_overlays_names_the_corrupt_file_and_fails(run_dir, photos, tmp_path):
    out = tmp_path / 'out'
    code, stdout, stderr = run_predict(['--run', str(run_dir), str(photos), '--out', str(out), '--overlay', '--device', 'cpu'])
    assert code == 1
    assert 'corrupt.jpg' in stderr and 'notes.txt' not in stderr
    assert sorted(p.name for p in out.glob('*.png')) == ['gray.png', 'scene0.png', 'scene1.png', 'scene2.png']
    assert sorted(p.name for p in (out / 'overlay').glob('*.jpg')) == ['gray.jpg', 'scene0.jpg', 'scene1.jpg', 'scene2.jpg']
    mask = Image.open(out / 'scene2.png')
    assert mask.mode == 'P' and mask.size == (48, 48)
    assert np.asarray(mask).max() < 5                                     # the mini recipe's 5 classes
    from cps_repro.evaluate import voc_palette                           # the dataset's palette (VOC layout)
    assert mask.getpalette()[:15] == voc_palette()[:5].flatten().tolist()
    assert Image.open(out / 'overlay' / 'scene2.jpg').size == (3 * 48 + 8, 48)
    assert '4 masks written' in stdout

    # a second run refuses to overwrite, then replaces with --overwrite
    before = (out / 'scene0.png').stat().st_mtime_ns
    code, _, stderr = run_predict(['--run', str(run_dir), str(photos), '--out', str(out), '--device', 'cpu'])
    assert code == 2 and '--overwrite' in stderr and (out / 'scene0.png').stat().st_mtime_ns == before
    code, _, _ = run_predict(['--run', str(run_dir), str(photos / 'scene0.jpg'), '--out', str(out), '--overwrite',
                              '--no-progress', '--device', 'cpu'])
    assert code == 0


def test_library_form_returns_arrays_and_matches_the_sliding_window(run_dir, photos):
    pr = load_predictor(run=run_dir, device='cpu')
    preds = predict([photos / 'scene0.jpg', photos / 'scene2.jpg'], predictor=pr)
    assert [p.shape for p in preds] == [(32, 32), (48, 48)] and all(p.dtype == np.uint8 for p in preds)
    one = predict(photos / 'scene0.jpg', run=run_dir, device='cpu')
    assert len(one) == 1 and np.array_equal(one[0], preds[0])
    sliding = predict(photos / 'scene0.jpg', predictor=pr, sliding_window=True)[0]
    assert np.array_equal(sliding, preds[0])               # a 32 px image is one window of the 32 px crop
    with pytest.raises(ImageReadError, match='corrupt.jpg'): predict(photos / 'corrupt.jpg', predictor=pr)


def test_checkpoint_with_preset_and_bare_state_dict(run_dir, photos, tmp_path):
    state = torch.load(run_dir / 'checkpoint.pt', map_location='cpu', weights_only=False)
    bare = tmp_path / 'net1.pt'; torch.save(state['nets'][0], bare)
    with pytest.raises(ValueError, match='--preset'): load_predictor(checkpoint=bare)
    pr = load_predictor(checkpoint=bare, preset_name='mini_supervised', device='cpu')
    ref = load_predictor(run=run_dir, device='cpu')
    img = photos / 'scene1.jpg'
    assert np.array_equal(predict(img, predictor=pr)[0], predict(img, predictor=ref)[0])
    code, _, stderr = run_predict(['--checkpoint', str(bare), '--preset', 'voc_supervised', str(img), '--out', str(tmp_path / 'o')])
    assert code == 2 and 'resnet50' in stderr and '--preset' in stderr       # wrong architecture: a clear error
    code, _, stderr = run_predict(['--run', str(run_dir), '--preset', 'mini_supervised', str(img), '--out', str(tmp_path / 'o')])
    assert code == 2 and '--preset goes with --checkpoint' in stderr
    code, _, stderr = run_predict(['--run', str(tmp_path / 'nope'), str(img), '--out', str(tmp_path / 'o')])
    assert code == 2 and 'nope' in stderr


def test_load_image_modes(tmp_path):
    ramp = (np.arange(6, dtype=np.uint16).reshape(2, 3) * 13107)
    Image.fromarray(ramp).save(tmp_path / 'r16.png')
    assert load_image(tmp_path / 'r16.png')[..., 1].tolist() == [[0, 51, 102], [153, 204, 255]]
    rgba = np.zeros((1, 2, 4), np.uint8); rgba[..., 2] = 255; rgba[0, 0, 3] = 255
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    assert load_image(tmp_path / 'a.png').tolist() == [[[0, 0, 255], [255, 255, 255]]]
    side = np.zeros((2, 3, 3), np.uint8); side[0, 0] = 255
    exif = Image.Exif(); exif[0x0112] = 6                                  # rotate 90° clockwise to view
    Image.fromarray(side).save(tmp_path / 'e.jpg', exif=exif, quality=100)
    up = load_image(tmp_path / 'e.jpg')
    assert up.shape == (3, 2, 3) and up[0, 1].min() > 200
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / 'g.png')
    assert load_image(tmp_path / 'g.png').shape == (4, 4, 3)


def test_inputs_are_checked_before_any_work(tmp_path):
    (tmp_path / 'a').mkdir(); (tmp_path / 'b').mkdir()
    for d in ('a', 'b'): Image.new('RGB', (4, 4)).save(tmp_path / d / 'x.jpg')
    with pytest.raises(FileNotFoundError, match='missing.jpg'): list_inputs([tmp_path / 'missing.jpg'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no image files'): list_inputs([tmp_path / 'empty'])
    from cps_repro.predict import output_paths
    with pytest.raises(ValueError, match='both write'): output_paths(list_inputs([tmp_path / 'a', tmp_path / 'b']), tmp_path / 'o', False)


class _Payload:
    "What a malicious checkpoint carries: unpickling it would create `marker` (it must never run)."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))


def test_a_checkpoint_from_elsewhere_cannot_run_code(run_dir, photos, tmp_path, capsys):
    "Issue 26: predict, eval and the self-training teacher read user files with torch.load(weights_only=False)."
    from cps_repro.methods import CheckpointError, read_checkpoint
    from cps_repro.methods.self_training import load_teacher
    from cps_repro.methods import model_kwargs
    from cps_repro.presets import preset
    state = torch.load(run_dir / 'checkpoint.pt', weights_only=False)
    marker = tmp_path / 'code_ran'
    evil = tmp_path / 'evil.pt'
    torch.save({**state, 'extra': _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match='not loaded'): load_predictor(checkpoint=evil)
    assert cps_repro(['eval', '--checkpoint', str(evil)]) == 2 and 'not loaded' in capsys.readouterr().err
    cfg = preset('mini_self_training', '1_2', teacher_checkpoint=str(evil))
    with pytest.raises(CheckpointError): load_teacher(cfg, model_kwargs(cfg))
    assert not marker.exists()
    assert read_checkpoint(run_dir / 'checkpoint.pt')['iteration'] == 3          # a real checkpoint: tensors and plain data
    import cps_repro as package
    sources = [p for p in Path(package.__file__).parent.rglob('*.py') if 'weights_only=False' in p.read_text()]
    assert not sources, sources


def test_predict_out_that_is_a_file_is_one_line(run_dir, photos, tmp_path, capsys):
    (tmp_path / 'masks').write_text('not a folder')
    code = cps_repro(['predict', '--run', str(run_dir), str(photos / 'scene0.jpg'), '--out', str(tmp_path / 'masks')])
    err = capsys.readouterr().err
    assert code == 2 and 'is a file, not a folder' in err and len(err.splitlines()) == 1, err
