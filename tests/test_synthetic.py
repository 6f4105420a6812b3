"Tests of cps_repro.synthetic: seeded scenes, the VOC and Cityscapes layouts, partition lists, refusal to overwrite."
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cps_repro.partitions import city_entry_id, read_list
from cps_repro.synthetic import (LAYOUTS, PRETRAIN_VOCABULARY, STYLE_NAMES, TARGET_VOCABULARY, TEXTURES, VOCABULARIES,
                                 SynthConfig, add_border_ignore, cli_synth, colour_baseline_accuracy, load_synthetic_info,
                                 render_scene, resolve_vocabulary, scene_seed, synthesize, voc_palette)

RATIOS = ('16', '8', '4', '2')


@pytest.fixture(scope='module')
def scenes32():
    "300 default scenes at 32 px (seed 0)."
    cfg = SynthConfig(size=32)
    return [render_scene(scene_seed(0, i), cfg) for i in range(300)]


@pytest.fixture(scope='module')
def voc_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp('voc') / 'data'
    info = synthesize(out, layout='voc', n=40, n_val=8, seed=5, size=48, progress=False)
    return out, info


@pytest.fixture(scope='module')
def city_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp('city') / 'data'
    info = synthesize(out, layout='cityscapes', n=40, n_val=8, seed=5, size=48, progress=False)
    return out, info


# ----------------------------------------------------------------------------------------------- scenes

def test_same_seed_gives_identical_arrays():
    cfg = SynthConfig(size=48)
    for i in range(8):
        a, b = render_scene(scene_seed(3, i), cfg), render_scene(scene_seed(3, i), cfg)
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and a[2] == b[2]


def test_different_seed_or_index_gives_different_scenes():
    cfg = SynthConfig(size=48)
    base = render_scene(scene_seed(3, 0), cfg)
    for other in (scene_seed(4, 0), scene_seed(3, 1), scene_seed(3, 0, 'val')):
        img, mask, _ = render_scene(other, cfg)
        assert img.tobytes() != base[0].tobytes() and mask.tobytes() != base[1].tobytes()


def test_scene_seed_is_a_pure_function_and_validates():
    assert scene_seed(0, 7) == scene_seed(0, 7) and len({scene_seed(s, i) for s in range(5) for i in range(50)}) == 250
    for bad in ((-1, 0), (0, -1), (1.5, 0), (True, 0)):
        with pytest.raises(ValueError, match='scene_seed'): scene_seed(*bad)
    with pytest.raises(ValueError, match='subset'): scene_seed(0, 0, 'extra')   # 'test' is a subset now


def test_shapes_and_dtypes():
    img, mask, style = render_scene(0, SynthConfig(size=40))
    assert img.shape == (40, 40, 3) and img.dtype == np.uint8 and mask.shape == (40, 40) and mask.dtype == np.uint8
    assert isinstance(style, int) and 0 <= style < len(STYLE_NAMES)


def test_masks_hold_only_class_ids_and_every_class_appears(scenes32):
    masks = np.stack([m for _, m, _ in scenes32])
    counts = np.bincount(masks.ravel(), minlength=256)
    assert counts[5:].sum() == 0, 'only 0..K in rendered masks'
    assert (counts[:5] > 1000).all(), f'every class covers many pixels: {counts[:5]}'
    assert 0.45 < (masks > 0).mean() < 0.65, 'large objects: about half of the pixels are foreground'
    for name in ('pretrain', ('dots', 'rings')):
        cfg = SynthConfig(size=32, vocabulary=name)
        ids = np.unique(np.stack([render_scene(scene_seed(1, i), cfg)[1] for i in range(200)]))
        assert ids.tolist() == list(range(cfg.num_classes))


def test_every_style_is_drawn_and_styles_can_be_restricted(scenes32):
    counts = np.bincount([s for *_, s in scenes32], minlength=len(STYLE_NAMES))
    assert len(counts) == 6 and (counts > 20).all()
    only = SynthConfig(size=32, styles=('tint', 5))
    assert {render_scene(i, only)[2] for i in range(40)} == {3, 5}
    assert {render_scene(i, SynthConfig(size=32, styles=1))[2] for i in range(10)} == {0}


def test_vocabularies_are_disjoint_presets():
    assert set(VOCABULARIES) == {'target', 'pretrain'}
    assert TARGET_VOCABULARY == ('stripes', 'checker', 'dots', 'solid')
    assert set(PRETRAIN_VOCABULARY) == {'noise', 'rings', 'grid', 'zigzag'}
    assert not set(TARGET_VOCABULARY) & set(PRETRAIN_VOCABULARY)
    assert set(TARGET_VOCABULARY) | set(PRETRAIN_VOCABULARY) == set(TEXTURES)
    assert SynthConfig(vocabulary='pretrain').class_names == ('background',) + PRETRAIN_VOCABULARY
    assert resolve_vocabulary(['grid', 'dots']) == ('grid', 'dots')


def test_colour_alone_does_not_decide_the_class(scenes32):
    """Nearest-class-mean RGB per object pixel is at chance (0.25 for 4 classes; measured about 0.24-0.26).
    The bound 0.4 leaves room for sampling noise and is far below a class-linked colour (control: > 0.9)."""
    fit, held = scenes32[:150], scenes32[150:]
    assert colour_baseline_accuracy(fit, held) < 0.4
    cfg = SynthConfig(size=32, vocabulary='pretrain')
    pre = [render_scene(scene_seed(2, i), cfg) for i in range(200)]
    assert colour_baseline_accuracy(pre[:100], pre[100:]) < 0.4

    def leak(scene):  # the control: objects re-coloured by class must be detected
        img, mask, style = scene
        hues = np.array([[0, 0, 0], [220, 30, 30], [30, 200, 30], [30, 30, 220], [220, 220, 30]], np.float64)
        out = img.astype(np.float64)
        out[mask > 0] = 0.6 * hues[mask[mask > 0]] + 0.4 * out[mask > 0]
        return out.astype(np.uint8), mask, style
    assert colour_baseline_accuracy([leak(s) for s in fit], [leak(s) for s in held]) > 0.9
    empty = (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match='no object pixels'): colour_baseline_accuracy([empty], [empty])


def test_low_contrast_style_has_weaker_object_texture_than_base():
    def texture_energy(style):
        cfg = SynthConfig(size=48, styles=(style,), noise=0.0, strong_noise=0.0, clutter=0.0)
        vals = []
        for i in range(60):
            img, mask, _ = render_scene(scene_seed(9, i), cfg)
            sel = mask == 1   # stripes
            if sel.sum() > 50: vals.append(img[sel].astype(float).std(0).max())
        return np.mean(vals)
    assert texture_energy('low_contrast') < 0.6 * texture_energy('base')


def test_max_overlap_zero_keeps_objects_apart():
    free = SynthConfig(size=32, objects=(4, 4))
    apart = SynthConfig(size=32, objects=(4, 4), max_overlap=0.0)
    fg = lambda cfg: np.mean([(render_scene(scene_seed(0, i), cfg)[1] > 0).mean() for i in range(60)])
    assert fg(apart) < fg(free)


def test_config_validation_names_the_field():
    bad = [dict(vocabulary='imagenet'), dict(vocabulary=('stripes', 'plaid')), dict(vocabulary=()),
           dict(vocabulary=('dots', 'dots')), dict(styles=('sepia',)), dict(styles=0), dict(styles=7),
           dict(radius=(0.4, 0.2)), dict(objects=(0, 2)), dict(objects=(1.5, 2)), dict(clutter=-0.1),
           dict(max_overlap=2), dict(noise=-1), dict(size=4), dict(period=0.2)]
    for kwargs in bad:
        field = next(iter(kwargs))
        with pytest.raises(ValueError) as e: SynthConfig(**kwargs)
        assert field in str(e.value), e.value
    with pytest.raises(TypeError, match='SynthConfig'): render_scene(0, {'size': 32})


def test_config_round_trips_through_json():
    cfg = SynthConfig(vocabulary=('grid', 'solid'), styles=(0, 4), clutter=0.2, radius=(0.1, 0.2), size=40)
    back = SynthConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and render_scene(1, back)[0].tobytes() == render_scene(1, cfg)[0].tobytes()
    with pytest.raises(ValueError, match='colour'): SynthConfig.from_dict({'colour': 'red'})


def test_add_border_ignore():
    m = np.zeros((8, 8), np.uint8)
    m[2:6, 2:6] = 2
    b1, b2 = add_border_ignore(m, 1), add_border_ignore(m, 2)
    assert (b1 == 255).sum() == 16 - 4 and (b1[3:5, 3:5] == 2).all() and (b1[m == 0] == 0).all()
    assert (b2 == 255).sum() == 16 and (b2 == 2).sum() == 0
    assert (add_border_ignore(m, 0) == m).all() and add_border_ignore(m, 1) is not m and (m != 255).all()
    touching = np.zeros((4, 4), np.uint8); touching[:, 2:] = 3; touching[:, :2] = 3
    assert (add_border_ignore(touching, 1) == 3).all(), 'no band inside one class or at the image edge'
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='width'): add_border_ignore(m, bad)


def test_voc_palette_is_the_standard_one():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert pal[15].tolist() == [192, 128, 128] and pal[255].tolist() == [224, 224, 192]


# ----------------------------------------------------------------------------------------------- VOC layout

def _check_partition_lists(labeled, unlabeled, full, nested=True):
    prev = set()
    for r in RATIOS:
        lab, unl = labeled(r), unlabeled(r)
        assert len(lab) == len(set(lab)) and len(unl) == len(set(unl))
        assert not set(lab) & set(unl), f'1-{r}: labeled and unlabeled overlap'
        assert set(lab) | set(unl) == set(full), f'1-{r}: union is not the full set'
        assert len(lab) == math.ceil(len(full) / int(r))
        if nested: assert prev <= set(lab), f'1-{r} does not contain the smaller labeled set'
        prev = set(lab)


def test_voc_layout_files(voc_dataset):
    out, info = voc_dataset
    voc = out / 'VOCdevkit' / 'VOC2012'
    sets = voc / 'ImageSets' / 'Segmentation'
    train_aug, val, train = read_list(sets / 'train_aug.txt'), read_list(sets / 'val.txt'), read_list(sets / 'train.txt')
    assert train_aug == [f'synth_{i:06d}' for i in range(1, 41)] and val == [f'synth_{i:06d}' for i in range(41, 49)]
    assert set(train) < set(train_aug) and len(train) == round(40 * 1464 / 10582)
    test = read_list(sets / 'test.txt')                      # the held-out test set, numbered after val
    assert test == [f'synth_{i:06d}' for i in range(49, 57)]
    assert sorted(p.stem for p in (voc / 'JPEGImages').iterdir()) == train_aug + val + test
    assert sorted(p.name for p in (voc / 'SegmentationClassAug').iterdir()) == [f'{i}.png' for i in train_aug + val + test]
    assert (sets / 'train_aug.txt').read_bytes().endswith(b'synth_000040\n') and b'\r' not in (sets / 'val.txt').read_bytes()
    for image_id in ('synth_000001', 'synth_000045'):
        jpg = Image.open(voc / 'JPEGImages' / f'{image_id}.jpg')
        assert jpg.format == 'JPEG' and jpg.mode == 'RGB' and jpg.size == (48, 48)
        png = Image.open(voc / 'SegmentationClassAug' / f'{image_id}.png')
        assert png.format == 'PNG' and png.mode == 'P' and png.size == (48, 48)
        assert np.array(png.getpalette()[:15]).reshape(5, 3).tolist() == voc_palette()[:5].tolist()
        assert set(np.unique(np.array(png))) <= {0, 1, 2, 3, 4, 255}


def test_voc_files_are_the_rendered_scenes(voc_dataset):
    out, info = voc_dataset
    voc = out / 'VOCdevkit' / 'VOC2012'
    cfg = SynthConfig.from_dict(info['config'])
    for index, (subset, image_id) in enumerate([('train', 'synth_000001'), ('train', 'synth_000002')]):
        img, mask, style = render_scene(scene_seed(5, index, subset), cfg)
        assert (np.array(Image.open(voc / 'SegmentationClassAug' / f'{image_id}.png')) == add_border_ignore(mask, 1)).all()
        decoded = np.array(Image.open(voc / 'JPEGImages' / f'{image_id}.jpg')).astype(int)
        assert np.abs(decoded - img).mean() < 4, 'JPEG quality 95 stays close to the rendered image'
        assert info['styles'][subset][image_id] == style
    img, mask, style = render_scene(scene_seed(5, 0, 'val'), cfg)
    assert (np.array(Image.open(voc / 'SegmentationClassAug' / 'synth_000041.png')) == add_border_ignore(mask, 1)).all()


def test_voc_partitions(voc_dataset):
    out, _ = voc_dataset
    parts = out / 'partitions' / 'pascal_voc' / 'subset_train_aug'
    sets = out / 'VOCdevkit' / 'VOC2012' / 'ImageSets' / 'Segmentation'
    train_aug, train = read_list(sets / 'train_aug.txt'), read_list(sets / 'train.txt')
    _check_partition_lists(lambda r: read_list(parts / f'train_aug_labeled_1-{r}.txt'),
                           lambda r: read_list(parts / f'train_aug_unlabeled_1-{r}.txt'), train_aug)
    _check_partition_lists(lambda r: read_list(parts / f'pseudoseg_labeled_1-{r}.txt'),
                           lambda r: read_list(parts / f'pseudoseg_unlabeled_1-{r}.txt'), train, nested=False)
    assert len(list(parts.iterdir())) == 16
    raw = (parts / 'pseudoseg_labeled_1-2.txt').read_bytes()
    assert b'\r\n' in raw and not raw.endswith(b'\n'), 'PseudoSeg labeled lists: CRLF, no final newline (official layout)'
    assert (parts / 'pseudoseg_unlabeled_1-2.txt').read_bytes().endswith(b'\r\n')
    assert b'\r' not in (parts / 'train_aug_labeled_1-8.txt').read_bytes()


def test_voc_metadata(voc_dataset):
    out, info = voc_dataset
    meta = load_synthetic_info(out)
    assert meta == json.loads((out / 'synthetic.json').read_text())
    assert {k: info[k] for k in meta} == meta and info['seconds'] > 0 and info['out'] == str(out)
    assert meta['layout'] == 'voc' and meta['seed'] == 5 and meta['size'] == 48 and meta['border_ignore'] == 1
    assert meta['num_classes'] == 5 and meta['class_names'] == ['background', 'stripes', 'checker', 'dots', 'solid']
    assert meta['counts'] == {'train': 40, 'val': 8, 'train_subset': 6, 'test': 8}
    assert meta['style_names'] == list(STYLE_NAMES)
    assert len(meta['styles']['train']) == 40 and len(meta['styles']['val']) == 8 and len(meta['styles']['test']) == 8
    assert all(0 <= s < 6 for s in meta['styles']['train'].values())
    assert all((out / p).is_file() for p in meta['lists']) and len(meta['lists']) == 3 + 16 + 1   # + test.txt
    with pytest.raises(FileNotFoundError, match='cps-repro synth'): load_synthetic_info(out / 'VOCdevkit')


def test_border_ignore_zero_and_wider(tmp_path):
    synthesize(tmp_path / 'b0', n=6, n_val=1, size=32, progress=False, border_ignore=0)
    synthesize(tmp_path / 'b2', n=6, n_val=1, size=32, progress=False, border_ignore=2)
    seg = lambda root: np.stack([np.array(Image.open(p)) for p in sorted((root / 'VOCdevkit/VOC2012/SegmentationClassAug').iterdir())])
    m0, m2 = seg(tmp_path / 'b0'), seg(tmp_path / 'b2')
    assert not (m0 == 255).any() and (m2 == 255).mean() > 0.05
    assert ((m2 == 255) | (m2 == m0)).all(), 'the band only replaces labels by 255'


def test_default_val_count(tmp_path):
    info = synthesize(tmp_path / 'd', n=10, size=16, progress=False)
    assert info['counts']['val'] == 3   # ceil(0.3 n)


# ----------------------------------------------------------------------------------------------- Cityscapes layout

def test_cityscapes_layout(city_dataset):
    out, info = city_dataset
    cfgdir = out / 'partitions' / 'city' / 'config_new'
    train, val = read_list(cfgdir / 'train.txt'), read_list(cfgdir / 'val.txt')
    assert len(train) == 40 and len(val) == 8
    assert (cfgdir / 'train.txt').read_text().split('\n')[0].count('\t') == 1
    train_ids = []
    for subset, lines in (('train', train), ('val', val)):
        for line in lines:
            sub, image_id = city_entry_id(line)
            assert sub == subset and re.fullmatch(r'[a-z]+_\d{6}_\d{6}', image_id)
            assert line == f'/images/{subset}/{image_id}.png\t/segmentation/{subset}/{image_id}_gtFine.png'
            city = image_id.split('_')[0]
            img = Image.open(out / 'leftImg8bit' / subset / city / f'{image_id}_leftImg8bit.png')
            lab = Image.open(out / 'gtFine' / subset / city / f'{image_id}_gtFine_labelTrainIds.png')
            assert img.format == 'PNG' and img.mode == 'RGB' and img.size == (48, 48)
            assert lab.mode == 'L' and set(np.unique(np.array(lab))) <= set(range(5))
            if subset == 'train': train_ids.append(image_id)
    assert len({i.split('_')[0] for i in train_ids}) >= 2
    assert not {city_entry_id(v)[1].split('_')[0] for v in val} & {i.split('_')[0] for i in train_ids}
    sub = cfgdir / 'subset_train'
    ids = lambda name: [city_entry_id(line)[1] for line in read_list(sub / name)]
    _check_partition_lists(lambda r: ids(f'train_aug_labeled_1-{r}.txt'), lambda r: ids(f'train_aug_unlabeled_1-{r}.txt'), train_ids)
    assert len(list(sub.iterdir())) == 8
    n_files = sum(1 for p in (out / 'leftImg8bit').rglob('*.png')) + sum(1 for p in (out / 'gtFine').rglob('*.png'))
    assert n_files == 2 * (48 + 8) and not (out / 'VOCdevkit').exists()      # train, val and the 8 test scenes
    assert len(read_list(cfgdir / 'test.txt')) == 8 and all(city_entry_id(l)[0] == 'test' for l in read_list(cfgdir / 'test.txt'))
    meta = load_synthetic_info(out)
    assert meta['layout'] == 'cityscapes' and meta['border_ignore'] == 0 and set(meta['styles']['train']) == set(train_ids)


def test_cityscapes_pixels_are_the_rendered_scene(city_dataset):
    out, info = city_dataset
    image_id = city_entry_id(read_list(out / 'partitions/city/config_new/train.txt')[0])[1]
    img, mask, _ = render_scene(scene_seed(5, 0), SynthConfig(size=48))
    city = image_id.split('_')[0]
    assert (np.array(Image.open(out / 'leftImg8bit/train' / city / f'{image_id}_leftImg8bit.png')) == img).all(), 'PNG is lossless'
    assert (np.array(Image.open(out / 'gtFine/train' / city / f'{image_id}_gtFine_labelTrainIds.png')) == mask).all()


# ----------------------------------------------------------------------------------------------- determinism on disk

def _tree_bytes(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('layout', LAYOUTS)
def test_same_seed_same_files_regardless_of_workers(tmp_path, layout):
    synthesize(tmp_path / 'a', layout=layout, n=12, n_val=3, seed=2, size=32, progress=False)
    synthesize(tmp_path / 'b', layout=layout, n=12, n_val=3, seed=2, size=32, progress=False, workers=2)
    synthesize(tmp_path / 'c', layout=layout, n=12, n_val=3, seed=3, size=32, progress=False)
    a, b, c = (_tree_bytes(tmp_path / x) for x in 'abc')
    assert a == b
    assert a.keys() == c.keys() and sum(a[k] != c[k] for k in a) > 20, 'another seed, other images and lists'


def test_more_images_keep_the_first_ones(tmp_path):
    synthesize(tmp_path / 'small', n=4, n_val=2, seed=1, size=24, progress=False)
    synthesize(tmp_path / 'big', n=9, n_val=2, seed=1, size=24, progress=False)
    for name in ('synth_000001.jpg', 'synth_000004.jpg'):
        p = Path('VOCdevkit/VOC2012/JPEGImages') / name
        assert (tmp_path / 'small' / p).read_bytes() == (tmp_path / 'big' / p).read_bytes()


# ----------------------------------------------------------------------------------------------- refusal and bad input

@pytest.mark.parametrize('marker', ['synthetic.json', 'VOCdevkit', 'partitions', 'leftImg8bit', 'gtFine'])
def test_refuses_a_folder_that_holds_a_dataset(tmp_path, marker):
    out = tmp_path / 'out'
    out.mkdir()
    (out / marker).mkdir() if '.' not in marker else (out / marker).write_text('{}')
    before = _tree_bytes(out)
    for layout in LAYOUTS:
        with pytest.raises(FileExistsError) as e: synthesize(out, layout=layout, n=4, size=16, progress=False)
        assert str(out) in str(e.value) and 'empty or new folder' in str(e.value)
    assert _tree_bytes(out) == before and sorted(p.name for p in out.iterdir()) == [marker]


def test_refuses_to_regenerate_and_accepts_empty_folder(tmp_path):
    (tmp_path / 'empty').mkdir()
    synthesize(tmp_path / 'empty', n=4, size=16, progress=False)
    before = _tree_bytes(tmp_path / 'empty')
    with pytest.raises(FileExistsError, match='never overwrites'): synthesize(tmp_path / 'empty', n=4, size=16, seed=9, progress=False)
    assert _tree_bytes(tmp_path / 'empty') == before
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(FileExistsError, match='is a file'): synthesize(tmp_path / 'notes.txt', n=4, size=16, progress=False)
    (tmp_path / 'other').mkdir(); (tmp_path / 'other' / 'README').write_text('unrelated')
    synthesize(tmp_path / 'other', n=4, size=16, progress=False)   # unrelated files are no dataset


@pytest.mark.parametrize('kwargs, match', [
    (dict(layout='ade20k'), 'layout'), (dict(n=1), 'n must'), (dict(n=2.5), 'n must'), (dict(n_val=0), 'n_val'),
    (dict(seed=-1), 'seed'), (dict(size=4), 'size'), (dict(workers=0), 'workers'), (dict(border_ignore=-1), 'border_ignore'),
    (dict(size=32, cfg=SynthConfig(size=48)), 'cfg.size'),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match): synthesize(tmp_path / 'x', progress=False, **{'n': 4, **kwargs})
    assert not (tmp_path / 'x').exists(), 'nothing is written for bad arguments'


def test_bad_cfg_type(tmp_path):
    with pytest.raises(TypeError, match='SynthConfig'): synthesize(tmp_path / 'x', n=4, cfg={'size': 96}, progress=False)


def test_custom_cfg_is_used_and_recorded(tmp_path):
    cfg = SynthConfig(vocabulary='pretrain', styles=(2,), size=24)
    info = synthesize(tmp_path / 'p', n=6, n_val=2, size=24, cfg=cfg, progress=False)
    assert info['class_names'][1:] == list(PRETRAIN_VOCABULARY) and set(info['styles']['train'].values()) == {2}
    assert SynthConfig.from_dict(info['config']) == cfg


# ----------------------------------------------------------------------------------------------- CLI helper

def test_cli_synth(tmp_path, capsys):
    assert cli_synth(tmp_path / 'c', layout='cityscapes', n=6, seed=1, size=16, n_val=2) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / 'c') in out and 'cityscapes' in out and ' s' in out
    assert load_synthetic_info(tmp_path / 'c')['counts'] == {'train': 6, 'val': 2, 'test': 2}
    assert cli_synth(tmp_path / 'c', n=6, size=16) == 1
    assert 'choose an empty or new folder' in capsys.readouterr().err
    assert cli_synth(tmp_path / 'd', layout='coco', n=6, size=16) == 1
    assert 'layout' in capsys.readouterr().err


# ---- the held-out test set ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('layout', LAYOUTS)
def test_every_generated_dataset_gets_a_disjoint_test_set_and_train_val_files_do_not_move(tmp_path, layout):
    from cps_repro.synthetic import add_test_split
    new = synthesize(tmp_path / 'new', layout=layout, n=12, n_val=3, seed=2, size=24, progress=False)
    old = synthesize(tmp_path / 'old', layout=layout, n=12, n_val=3, seed=2, size=24, progress=False, n_test=0)
    assert new['counts']['test'] == 3 and 'test' not in old['counts']
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*'))
                          if p.is_file() and p.name != 'synthetic.json'}
    a, b = files(tmp_path / 'new'), files(tmp_path / 'old')
    assert {k: a[k] for k in b} == b and len(a) - len(b) == 2 * 3 + 1          # 3 images + 3 masks + the test list
    test_list = next(k for k in set(a) - set(b) if k.endswith('test.txt'))
    assert set(new['styles']['test']).isdisjoint(set(new['styles']['train']) | set(new['styles']['val']))
    assert add_test_split(tmp_path / 'old')['counts'] == new['counts'] and files(tmp_path / 'old') == a
    assert test_list in load_synthetic_info(tmp_path / 'old')['lists']


def test_test_scenes_have_their_own_seeds():
    assert len({scene_seed(0, 0, s) for s in ('train', 'val', 'test')}) == 3
    assert scene_seed(5, 1, 'train') == int(np.random.SeedSequence([5, 0, 1]).generate_state(1, np.uint64)[0])   # unchanged
    with pytest.raises(ValueError, match='subset'): scene_seed(0, 0, 'extra')


def test_synthesize_refuses_a_negative_test_count(tmp_path):
    with pytest.raises(ValueError, match='n_test'): synthesize(tmp_path / 'x', n=4, size=16, n_test=-1, progress=False)
