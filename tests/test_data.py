"Tests of cps_repro.data: layouts and their errors, decoding checks, the paired augmentation, resumable streams, data check."
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cps_repro.data import (
    IMAGENET_MEAN, IMAGENET_STD, TRAIN_SCALES, DataError, DataNotFoundError, EvalTransform, InfiniteStream, Problem,
    Sample, SegmentationDataset, TrainTransform, VirtualEpochSampler, check_dataset, cityscapes_paths,
    cityscapes_samples, cli_data_check, default_num_classes, derive_seed, folder_samples, iters_per_epoch,
    is_all_ignore, load_sample, load_samples, make_train_streams, mask_dtype, normalize, read_image, read_mask,
    to_device, virtual_epoch_length, virtual_epoch_order, voc_palette, voc_samples)
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

torch.set_num_threads(1)


# ---------------------------------------------------------------- fixtures written with PIL
def _palette_png(path, mask):
    im = Image.frombytes('P', (mask.shape[1], mask.shape[0]), mask.astype(np.uint8).tobytes())
    im.putpalette(voc_palette().tobytes())
    im.save(path)


def _scene(rng, h, w, n_classes=5):
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    mask = rng.integers(0, n_classes, (h, w)).astype(np.uint8)
    mask[0, :] = 255
    return img, mask


def write_voc(root, n=6, size=(24, 32), seed=0):
    rng = np.random.default_rng(seed)
    v = Path(root) / 'VOCdevkit' / 'VOC2012'
    for d in ('JPEGImages', 'SegmentationClassAug', 'ImageSets/Segmentation'):
        (v / d).mkdir(parents=True, exist_ok=True)
    ids = [f'2008_{k:06d}' for k in range(n)]
    for i in ids:
        img, mask = _scene(rng, *size)
        Image.fromarray(img).save(v / 'JPEGImages' / f'{i}.jpg', quality=95)
        _palette_png(v / 'SegmentationClassAug' / f'{i}.png', mask)
    (v / 'ImageSets/Segmentation/train_aug.txt').write_text('\n'.join(ids[:-2]) + '\n')
    (v / 'ImageSets/Segmentation/val.txt').write_text('\r\n'.join(ids[-2:]))      # CRLF, no final newline
    return ids


def write_city(root, keys=(('train', 'jena_000078_000019'), ('train', 'aachen_000001_000019'), ('val', 'lindau_000000_000019')),
               extra=('bochum_000000_000313',), size=(16, 32)):
    rng = np.random.default_rng(1)
    for sub, i in keys:
        img_p, lab_p = cityscapes_paths(root, sub, i)
        img_p.parent.mkdir(parents=True, exist_ok=True); lab_p.parent.mkdir(parents=True, exist_ok=True)
        img, mask = _scene(rng, *size, n_classes=19)
        Image.fromarray(img).save(img_p)
        Image.fromarray(mask).save(lab_p)                      # grayscale trainIds
    for i in extra:
        img_p, _ = cityscapes_paths(root, 'train_extra', i)
        img_p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_scene(rng, *size)[0]).save(img_p)
    lists = Path(root) / 'partitions' / 'city' / 'config_new'
    lists.mkdir(parents=True, exist_ok=True)
    line = lambda sub, i, suf='gtFine': f'/images/{sub}/{i}.png\t/segmentation/{sub}/{i}_{suf}.png\n'
    (lists / 'train.txt').write_text(''.join(line(s, i) for s, i in keys if s == 'train'))
    (lists / 'val.txt').write_text(''.join(line(s, i) for s, i in keys if s == 'val'))
    (lists / 'extra.txt').write_text(''.join(line('train_extra', i, 'gtCoarse') for i in extra))
    return keys


def write_folder(root, n_labeled=3, n_unlabeled=2, size=(20, 20)):
    rng = np.random.default_rng(2)
    root = Path(root)
    (root / 'images').mkdir(parents=True); (root / 'masks').mkdir()
    ids = [f'img{k}' for k in range(n_labeled + n_unlabeled)]
    for k, i in enumerate(ids):
        img, mask = _scene(rng, *size, n_classes=3)
        Image.fromarray(img).save(root / 'images' / (f'{i}.png' if k % 2 else f'{i}.jpg'))
        if k < n_labeled: Image.fromarray(mask).save(root / 'masks' / f'{i}.png')
    (root / 'labeled.txt').write_text('\n'.join(ids[:n_labeled]) + '\n')
    (root / 'unlabeled.txt').write_text('\n'.join(ids[n_labeled:]) + '\n')
    return ids


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / 'voc'
    return root, write_voc(root)


@pytest.fixture
def city(tmp_path):
    root = tmp_path / 'city'
    return root, write_city(root)


def _vdir(root): return Path(root) / 'VOCdevkit' / 'VOC2012'


# ---------------------------------------------------------------- layouts and their errors
def test_voc_samples_from_list_and_ids(voc):
    root, ids = voc
    s = voc_samples(root, 'train_aug')
    assert [x.id for x in s] == ids[:4]
    assert s[0] == Sample(_vdir(root) / 'JPEGImages' / f'{ids[0]}.jpg', _vdir(root) / 'SegmentationClassAug' / f'{ids[0]}.png', ids[0])
    assert [x.id for x in voc_samples(root, 'val')] == ids[-2:]            # CRLF list without final newline
    assert voc_samples(_vdir(root), 'val') == voc_samples(root, 'val')     # root may be the VOC2012 folder
    assert all(x.label is None for x in voc_samples(root, ids=ids, labeled=False))
    assert load_samples('voc', root, ids=ids[:1]) == s[:1]


def test_voc_partition_list_is_found_under_partitions(voc):
    root, ids = voc
    p = root / 'partitions' / 'pascal_voc' / 'subset_train_aug'
    p.mkdir(parents=True)
    (p / 'train_aug_labeled_1-8.txt').write_text(ids[1] + '\n')
    assert [x.id for x in voc_samples(root, 'pascal_voc/subset_train_aug/train_aug_labeled_1-8.txt')] == [ids[1]]


@pytest.mark.parametrize('dataset, command', [('voc', 'python data_scripts/prepare_voc.py --root'),
                                              ('cityscapes', 'python data_scripts/prepare_cityscapes.py --zips DIR --root'),
                                              ('folder', 'cps-repro synth')])
def test_wrong_data_root_names_path_and_command(tmp_path, dataset, command):
    missing = tmp_path / 'no_such_root'
    with pytest.raises(DataNotFoundError) as e:
        load_samples(dataset, missing, ids=['a'])
    assert str(missing) in str(e.value) and command in str(e.value)
    empty = tmp_path / 'empty_root'; empty.mkdir()
    with pytest.raises(DataNotFoundError) as e:
        load_samples(dataset, empty, ids=['a'])
    assert str(empty) in str(e.value) and command in str(e.value)


def test_wrong_voc_root_mentions_synth(tmp_path):
    with pytest.raises(DataNotFoundError, match='cps-repro synth .* --layout voc'):
        voc_samples(tmp_path, ids=['a'])


def test_image_missing_names_the_file(voc):
    root, ids = voc
    img = _vdir(root) / 'JPEGImages' / f'{ids[2]}.jpg'
    img.unlink()
    with pytest.raises(DataNotFoundError) as e:
        voc_samples(root, 'train_aug')
    assert str(img) in str(e.value) and 'train_aug.txt' in str(e.value) and e.value.path == img
    assert isinstance(e.value, FileNotFoundError)


def test_list_id_not_on_disk(voc):
    root, ids = voc
    (root / 'mine.txt').write_text(f'{ids[0]}\nnot_an_id_42\n')
    with pytest.raises(DataNotFoundError) as e:
        voc_samples(root, 'mine.txt')
    msg = str(e.value)
    assert 'not_an_id_42.jpg' in msg and 'mine.txt' in msg and '1 of 2' in msg


def test_mask_missing_for_labeled_id(voc):
    root, ids = voc
    mask = _vdir(root) / 'SegmentationClassAug' / f'{ids[1]}.png'
    mask.unlink()
    with pytest.raises(DataNotFoundError) as e:
        voc_samples(root, 'train_aug')
    assert str(mask) in str(e.value) and 'mask missing' in str(e.value) and repr(ids[1]) in str(e.value)
    assert len(voc_samples(root, 'train_aug', labeled=False)) == 4     # unlabeled: no mask needed


def test_empty_list_names_the_file(voc):
    root, _ = voc
    (root / 'blank.txt').write_text('\n  \n\r\n')
    with pytest.raises(DataError) as e:
        voc_samples(root, 'blank.txt')
    assert 'blank.txt' in str(e.value) and 'empty' in str(e.value)
    with pytest.raises(DataError, match='empty id list'):
        voc_samples(root, ids=[])


def test_list_file_not_found_lists_places_tried(voc):
    root, _ = voc
    with pytest.raises(DataNotFoundError) as e:
        voc_samples(root, 'nope_list')
    assert 'nope_list.txt' in str(e.value) and 'ImageSets' in str(e.value)


def test_exactly_one_of_list_and_ids(voc):
    root, ids = voc
    with pytest.raises(ValueError): voc_samples(root)
    with pytest.raises(ValueError): voc_samples(root, 'val', ids=ids)


def test_cityscapes_samples_map_official_lines(city):
    root, keys = city
    s = cityscapes_samples(root, 'train')
    assert [x.id for x in s] == ['jena_000078_000019', 'aachen_000001_000019']
    assert s[0].image == root / 'leftImg8bit/train/jena/jena_000078_000019_leftImg8bit.png'
    assert s[0].label == root / 'gtFine/train/jena/jena_000078_000019_gtFine_labelTrainIds.png'
    assert cityscapes_samples(root, ids=[('val', 'lindau_000000_000019')])[0].image.exists()
    extra = cityscapes_samples(root, 'extra', labeled=False)
    assert extra[0].image.parts[-3:] == ('train_extra', 'bochum', 'bochum_000000_000313_leftImg8bit.png')
    with pytest.raises(DataNotFoundError, match='mask missing'):
        cityscapes_samples(root, 'extra')                                  # train_extra has no gtFine


def test_cityscapes_malformed_line_names_list(city):
    root, _ = city
    bad = root / 'partitions' / 'city' / 'config_new' / 'bad.txt'
    bad.write_text('/images/train/jena_000078_000019.png /segmentation/train/jena_000078_000019_gtFine.png\n')
    with pytest.raises(DataError) as e:
        cityscapes_samples(root, 'bad.txt')
    assert 'bad.txt' in str(e.value) and 'malformed' in str(e.value)


def test_folder_samples(tmp_path):
    ids = write_folder(tmp_path / 'f')
    lab = folder_samples(tmp_path / 'f', 'labeled.txt')
    assert [s.id for s in lab] == ids[:3] and lab[1].image.suffix == '.png' and lab[0].image.suffix == '.jpg'
    unl = folder_samples(tmp_path / 'f', 'unlabeled.txt', labeled=False)
    assert [s.id for s in unl] == ids[3:] and all(s.label is None for s in unl)
    with pytest.raises(DataNotFoundError, match='mask missing'):
        folder_samples(tmp_path / 'f', 'unlabeled.txt')
    assert [s.id for s in folder_samples(tmp_path / 'f', labeled=False)] == sorted(ids)
    assert [s.id for s in folder_samples(tmp_path / 'f', ids=['img0.jpg'])] == ['img0']


# ---------------------------------------------------------------- decoding and validation
def test_truncated_image_names_file_and_fix(voc, tmp_path):
    root, ids = voc
    jpg = _vdir(root) / 'JPEGImages' / f'{ids[0]}.jpg'
    data = jpg.read_bytes(); jpg.write_bytes(data[:len(data) // 2])
    ds = SegmentationDataset(voc_samples(root, 'train_aug'), None, 21)
    with pytest.raises(DataError) as e:
        ds[0]
    assert str(jpg) in str(e.value) and 'data check' in str(e.value) and 'prepare' in str(e.value)
    garbage = tmp_path / 'garbage.png'; garbage.write_bytes(b'not an image at all')
    with pytest.raises(DataError, match='garbage.png'):
        read_image(garbage)


def test_decoding_error_keeps_its_type_through_a_worker(voc):
    root, ids = voc
    jpg = _vdir(root) / 'JPEGImages' / f'{ids[0]}.jpg'
    jpg.write_bytes(jpg.read_bytes()[:100])
    ds = SegmentationDataset(voc_samples(root, ids=ids[:1]), None, 21)
    with pytest.raises(DataError, match=ids[0]):
        next(iter(DataLoader(ds, batch_size=1, num_workers=1)))


def test_mask_values_out_of_range_named(voc):
    root, ids = voc
    mask = _vdir(root) / 'SegmentationClassAug' / f'{ids[0]}.png'
    m = np.zeros((24, 32), np.uint8); m[3, 4] = 21; m[5, 6] = 200; m[7, 8] = 255
    _palette_png(mask, m)
    with pytest.raises(DataError) as e:
        load_sample(voc_samples(root, ids=ids[:1])[0], num_classes=21)
    assert str(mask) in str(e.value) and '[21, 200]' in str(e.value) and '255' not in str(e.value).split('outside')[0]
    img, msk = load_sample(voc_samples(root, ids=ids[:1])[0], num_classes=201)   # fine with more classes
    assert msk[3, 4] == 21 and msk[7, 8] == 255


def test_size_mismatch_names_both(voc):
    root, ids = voc
    mask = _vdir(root) / 'SegmentationClassAug' / f'{ids[0]}.png'
    _palette_png(mask, np.zeros((23, 32), np.uint8))
    with pytest.raises(DataError) as e:
        load_sample(voc_samples(root, ids=ids[:1])[0], num_classes=21)
    msg = str(e.value)
    assert str(mask) in msg and f'{ids[0]}.jpg' in msg and '(23, 32)' in msg and '(24, 32)' in msg


def test_palette_mask_is_read_as_indices(tmp_path):
    m = np.array([[0, 1, 15], [255, 7, 0]], np.uint8)
    _palette_png(tmp_path / 'm.png', m)                  # colours: (0,0,0), (128,0,0), (192,128,128), ...
    got = read_mask(tmp_path / 'm.png')
    assert got.dtype == torch.int64 and got.tolist() == m.tolist()
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / 'rgb.png')
    with pytest.raises(DataError, match='rgb.png'):
        read_mask(tmp_path / 'rgb.png')


def test_voc_palette_known_colours():
    import cps_repro.evaluate, cps_repro.synthetic
    assert voc_palette is cps_repro.evaluate.voc_palette is cps_repro.synthetic.voc_palette   # one home
    pal = voc_palette()
    assert pal[1].tolist() == [128, 0, 0] and pal[2].tolist() == [0, 128, 0] and pal[20].tolist() == [0, 64, 128]
    assert pal[255].tolist() == [224, 224, 192]


# ---------------------------------------------------------------- transforms
def _img(h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), torch.randint(0, 5, (h, w), generator=g)


def _gen(s): return torch.Generator().manual_seed(s)


def _norm(x, valid):
    "The device half of the pipeline, on the CPU: normalise a uint8 crop and zero its padding."
    return to_device({'image': x, 'valid': valid}, 'cpu')['image']


class ReferenceTrainTransform:
    "The training transform before crop-first (normalise the whole rescaled image, pad with 0, crop), kept as the reference."
    def __init__(self, t: TrainTransform): self.t = t

    def __call__(self, image, mask, generator):
        t, p = self.t, self.t.draw(*image.shape[-2:], generator)
        img, msk = t.flip_resize(image, mask, p)            # shared by both orders: what differs is below
        img = normalize(img, t.mean, t.std)
        if any(p['pad']):
            img = TF.pad(img, list(p['pad']), fill=0.0)
            if msk is not None: msk = TF.pad(msk, list(p['pad']), fill=t.ignore_index)
        ch, cw = t.crop_size
        img = TF.crop(img, p['top'], p['left'], ch, cw).as_subclass(torch.Tensor).contiguous()
        if msk is not None: msk = TF.crop(msk, p['top'], p['left'], ch, cw).as_subclass(torch.Tensor).long().contiguous()
        return img, msk


@pytest.mark.parametrize('size, crop', [((24, 32), 16), ((20, 30), (40, 50)), ((37, 23), (30, 20)), ((50, 40), 48)])
def test_crop_first_is_bit_identical_to_the_reference(size, crop):
    "Old order (normalise, pad, crop) and new order (crop uint8, normalise on the device) give the same bits."
    img, mask = _img(*size, seed=sum(size))
    mask8 = mask.to(torch.uint8); mask8[0, :3] = 255
    new, ref = TrainTransform(crop, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)), None
    ref = ReferenceTrainTransform(new)
    for s in range(150):
        x, y, v = new(img, mask8, _gen(s))
        rx, ry = ref(img, mask8, _gen(s))
        got = to_device({'image': x, 'label': y, 'valid': v}, 'cpu', new.mean, new.std)
        assert got['image'].dtype == torch.float32 and got['label'].dtype == torch.int64 and 'valid' not in got
        assert torch.equal(got['image'].view(torch.int32), rx.view(torch.int32)), s    # bit for bit, +0.0 padding included
        assert torch.equal(got['label'], ry), s
        assert torch.equal(new(img, None, _gen(s))[0], x)
    # a collated batch of several draws takes the same path
    items = [new(img, mask8, _gen(s)) for s in range(6)]
    batch = {'image': torch.stack([i[0] for i in items]), 'label': torch.stack([i[1] for i in items]),
             'valid': torch.stack([i[2] for i in items]), 'id': [str(k) for k in range(6)]}
    got = to_device(batch, 'cpu', new.mean, new.std, channels_last=True)
    want = torch.stack([ref(img, mask8, _gen(s))[0] for s in range(6)])
    assert torch.equal(got['image'], want) and got['image'].is_contiguous(memory_format=torch.channels_last)
    assert got['id'] == batch['id']


def test_to_device_passes_float_images_and_other_tensors_through():
    x = torch.randn(2, 3, 4, 4); lab = torch.zeros(2, 4, 4, dtype=torch.long)
    got = to_device({'image': x, 'label': lab, 'index': torch.arange(2)}, 'cpu')
    assert got['image'] is x and got['label'] is lab and got['index'].tolist() == [0, 1]


@pytest.mark.parametrize('crop', [16, (12, 20), 64])
def test_train_transform_shapes(crop):
    img, mask = _img()
    t = TrainTransform(crop)
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    for s in range(8):
        x, y, v = t(img, mask, _gen(s))
        assert x.shape == (3, ch, cw) and y.shape == (ch, cw) and x.dtype == torch.uint8 and y.dtype == mask.dtype
        assert v.dtype == torch.int64 and v.shape == (4,) and t(img, None, _gen(s))[1] is None
        assert t(img, mask.to(torch.uint8), _gen(s))[1].dtype == torch.uint8


def test_padding_values_when_scaled_image_is_smaller_than_crop():
    img, mask = _img(20, 30)
    t = TrainTransform((40, 50), scales=[0.5], flip_p=0.0)      # scaled to 10 x 15: pad 30 rows, 35 cols
    x, y, v = t(img, mask, _gen(0))
    x = _norm(x, v)
    top, bottom, left, right = 15, 15, 17, 18
    assert v.tolist() == [top, 40 - bottom, left, 50 - right]
    inside = torch.zeros(40, 50, dtype=torch.bool); inside[top:40 - bottom, left:50 - right] = True
    assert (x[:, ~inside] == 0).all() and (y[~inside] == 255).all()
    assert (y[inside] != 255).all() and (x[:, inside] != 0).any(dim=0).all()
    assert torch.equal(y[inside].view(10, 15), mask[::2, ::2])   # nearest for the mask


def test_flip_keeps_image_and_mask_aligned():
    img, mask = _img()
    t = TrainTransform((24, 32), scales=[1.0], flip_p=1.0)
    x, y, v = t(img, mask, _gen(0))
    assert torch.equal(y, mask.flip(-1)) and torch.equal(_norm(x, v), normalize(img).flip(-1))
    # the label of every output pixel is the label of the image pixel it came from, for random draws too
    coded = torch.arange(24 * 32).view(24, 32) % 250                # positions encoded in the mask
    img_code = torch.stack([coded.to(torch.uint8)] * 3)             # same code in the image
    for s in range(10):
        x, y, v = TrainTransform(16, scales=[1.0])(img_code, coded, _gen(s))
        back = _norm(x, v)[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        assert torch.allclose(back * 255, y.float(), atol=1e-3)


def test_same_generator_seed_same_result_and_no_global_rng():
    img, mask = _img()
    t = TrainTransform(16)
    torch.manual_seed(0); a = t(img, mask, _gen(5))
    torch.manual_seed(1); state = torch.get_rng_state(); b = t(img, mask, _gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(state, torch.get_rng_state())                 # global RNG untouched
    outs = {t(img, mask, _gen(s))[0].sum().item() for s in range(10)}
    assert len(outs) > 5


def test_random_choices_cover_scales_flips_and_all_offsets():
    t = TrainTransform(8, scales=[1.0])
    draws = [t.draw(10, 12, _gen(s)) for s in range(300)]
    assert {d['top'] for d in draws} == {0, 1, 2} and {d['left'] for d in draws} == {0, 1, 2, 3, 4}
    assert {d['flip'] for d in draws} == {True, False}
    t2 = TrainTransform(8)
    assert {t2.draw(10, 12, _gen(s))['scale'] for s in range(300)} == set(TRAIN_SCALES)


def test_eval_transform_normalises_only():
    img, mask = _img()
    x, y = EvalTransform()(img, mask)
    assert x.shape == (3, 24, 32) and torch.equal(y, mask.long())
    expect = (img[1].float() / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert torch.allclose(x[1], expect, atol=1e-6)


def test_transform_rejects_bad_arguments():
    with pytest.raises(ValueError): TrainTransform(0)
    with pytest.raises(ValueError): TrainTransform(8, scales=[])
    with pytest.raises(ValueError): TrainTransform(8, flip_p=2)


# ---------------------------------------------------------------- dataset
def test_dataset_items(voc):
    root, ids = voc
    ds = SegmentationDataset(voc_samples(root, 'train_aug'), TrainTransform(16), 21)
    x = ds[(1, 77)]
    assert set(x) == {'image', 'label', 'valid', 'id'} and x['id'] == ids[1]
    assert x['image'].shape == (3, 16, 16) and x['image'].dtype == torch.uint8 and x['label'].dtype == torch.uint8
    assert torch.equal(ds[(1, 77)]['image'], x['image']) and not torch.equal(ds[(1, 78)]['image'], x['image'])
    u = SegmentationDataset(voc_samples(root, 'train_aug', labeled=False), TrainTransform(16), 21)
    assert set(u[(1, 77)]) == {'image', 'valid', 'id'} and torch.equal(u[(1, 77)]['image'], x['image'])
    e = SegmentationDataset(voc_samples(root, 'train_aug'), None, 21)[1]              # evaluation items stay float / int64
    assert e['image'].dtype == torch.float32 and e['label'].dtype == torch.int64 and set(e) == {'image', 'label', 'id'}
    with pytest.raises(ValueError, match='mix'):
        SegmentationDataset(ds.samples[:1] + u.samples[1:2], None, 21)
    with pytest.raises(ValueError): SegmentationDataset([], None, 21)
    with pytest.raises(IndexError): ds[(99, 0)]


# ---------------------------------------------------------------- virtual epochs and streams
def test_virtual_epoch_order():
    o = virtual_epoch_order(3, 8, _gen(0))
    assert o.dtype == torch.int64 and len(o) == 8 and sorted(torch.bincount(o, minlength=3).tolist()) == [2, 3, 3]
    assert torch.equal(o, virtual_epoch_order(3, 8, _gen(0)))
    assert len({tuple(virtual_epoch_order(5, 5, _gen(s)).tolist()) for s in range(10)}) > 5
    assert len(set(virtual_epoch_order(50, 20, _gen(0)).tolist())) == 20
    with pytest.raises(ValueError): virtual_epoch_order(0, 5, _gen(0))


def test_official_epoch_accounting():
    assert virtual_epoch_length(1323, 9259) == 9259 and iters_per_epoch(9259, 8) == 1157     # VOC 1/8
    assert iters_per_epoch(virtual_epoch_length(372, 2603), 8) == 325                        # City 1/8
    assert iters_per_epoch(virtual_epoch_length(5291, 5291), 8) == 661                       # VOC 1/2


class Counting(torch.utils.data.Dataset):
    "A tiny in-memory dataset that counts its __getitem__ calls and returns key-derived random data."
    def __init__(self, n): self.n, self.calls = n, 0
    def __len__(self): return self.n
    def __getitem__(self, key):
        self.calls += 1
        index, seed = key
        return dict(x=torch.rand(3, generator=_gen(seed)), index=index, id=f'id{index}')


def _same(a, b):
    assert a['id'] == b['id']
    for k in a:
        if isinstance(a[k], torch.Tensor): assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize('num_workers', [0, 2])
def test_stream_resumes_exactly(voc, num_workers):
    root, _ = voc
    ds = SegmentationDataset(voc_samples(root, 'train_aug'), TrainTransform(16), 21)
    kw = dict(batch_size=2, seed=3, virtual_length=6, num_workers=num_workers)
    a = InfiniteStream(ds, **kw)
    assert a.batches_per_epoch == 3
    for _ in range(2): next(a)
    state = a.state_dict()
    assert state == {'epoch': 0, 'batch_in_epoch': 2}
    cont = [next(a) for _ in range(4)]                       # crosses into epoch 1
    assert a.state_dict() == {'epoch': 2, 'batch_in_epoch': 0}
    b = InfiniteStream(ds, **kw)
    b.load_state_dict(state)
    for x, y in zip(cont, [next(b) for _ in range(4)]): _same(x, y)
    ref = InfiniteStream(ds, **{**kw, 'num_workers': 0})   # independent of the number of workers
    ref.load_state_dict(state)
    _same(cont[0], next(ref))
    a.close(); b.close()


def test_resume_does_not_decode_skipped_batches():
    ds = Counting(10)
    s = InfiniteStream(ds, batch_size=2, seed=0)
    s.load_state_dict({'epoch': 3, 'batch_in_epoch': 4})
    batch = next(s)
    assert ds.calls == 2 and s.state_dict() == {'epoch': 4, 'batch_in_epoch': 0}
    order = VirtualEpochSampler(10, 0).epoch_order(3).tolist()
    assert batch['index'].tolist() == order[8:10]


def test_persistent_workers_resume():
    ds = Counting(8)
    s = InfiniteStream(ds, batch_size=2, seed=1, num_workers=2, persistent_workers=True)
    b0, b1, b2 = next(s), next(s), next(s)
    s.load_state_dict({'epoch': 0, 'batch_in_epoch': 1})
    _same(next(s), b1); _same(next(s), b2)
    s.set_epoch(0)
    _same(next(s), b0)
    s.close()


def test_epochs_reshuffle_and_cover_the_set():
    ds = Counting(6)
    s = InfiniteStream(ds, batch_size=3, seed=0)
    epochs = [[i for _ in range(2) for i in next(s)['index'].tolist()] for _ in range(3)]
    assert all(sorted(e) == list(range(6)) for e in epochs) and len({tuple(e) for e in epochs}) > 1


def test_ranks_are_disjoint_and_cover_the_epoch_order():
    n, B, W = 12, 2, 2
    ranks = [InfiniteStream(Counting(n), batch_size=B, seed=5, rank=r, world_size=W) for r in range(W)]
    assert ranks[0].batches_per_epoch == n // (B * W)
    per_rank = [[next(s) for _ in range(s.batches_per_epoch)] for s in ranks]
    idx = [[i for b in batches for i in b['index'].tolist()] for batches in per_rank]
    assert set(idx[0]).isdisjoint(idx[1]) and sorted(idx[0] + idx[1]) == list(range(n))
    order = VirtualEpochSampler(n, 5).epoch_order(0).tolist()
    single = InfiniteStream(Counting(n), batch_size=B * W, seed=5)
    for i in range(n // (B * W)):                                   # global batch i = both ranks' batch i
        g = next(single)
        for r in range(W):
            for j in range(B):
                assert per_rank[r][i]['index'][j] == g['index'][r + W * j] == order[i * B * W + r + W * j]
                assert torch.equal(per_rank[r][i]['x'][j], g['x'][r + W * j])   # same augmentation seed


def test_virtual_length_drops_the_tail_per_rank():
    s = [VirtualEpochSampler(5, 0, virtual_length=11, rank=r, world_size=2) for r in range(2)]
    assert len(s[0]) == len(s[1]) == 5
    pos = s[0].positions() + s[1].positions()
    assert sorted(pos) == list(range(10))
    s0 = VirtualEpochSampler(5, 0, virtual_length=11, rank=0, world_size=2, drop_last=False)
    assert len(s0) == 6


def test_stream_creation_does_not_touch_global_rng():
    torch.manual_seed(0); state = torch.get_rng_state()
    s = InfiniteStream(Counting(4), batch_size=2, seed=0)
    next(s); next(s)
    assert torch.equal(state, torch.get_rng_state())


def test_bad_state_and_too_small_dataset():
    s = InfiniteStream(Counting(4), batch_size=2, seed=0)
    with pytest.raises(ValueError, match='2 batches per epoch'): s.load_state_dict({'epoch': 0, 'batch_in_epoch': 2})
    with pytest.raises(KeyError): s.load_state_dict({'epoch': 0})
    with pytest.raises(ValueError, match='lower the batch size'): InfiniteStream(Counting(3), batch_size=4, seed=0)


def test_make_train_streams():
    lab, (u0, u1) = make_train_streams(Counting(2), Counting(8), batch_size=2, seed=0, n_unlabeled_streams=2)
    assert lab.virtual_length == u0.virtual_length == u1.virtual_length == 8
    assert lab.batches_per_epoch == u0.batches_per_epoch == 4
    a = [i for _ in range(4) for i in next(u0)['index'].tolist()]
    b = [i for _ in range(4) for i in next(u1)['index'].tolist()]
    assert sorted(a) == sorted(b) == list(range(8)) and a != b            # different pairing
    _, (q0, q1) = make_train_streams(Counting(2), Counting(8), batch_size=2, seed=0, n_unlabeled_streams=2,
                                     pair_unlabeled_with_itself=True)
    x0, x1 = next(q0), next(q1)
    assert torch.equal(x0['index'], x1['index']) and not torch.equal(x0['x'], x1['x'])
    assert derive_seed(0, 'a') != derive_seed(0, 'b')


# ---------------------------------------------------------------- data check
def test_check_dataset_reports_every_problem(voc, capsys):
    root, ids = voc
    assert check_dataset('voc', root, progress=False) == []
    assert cli_data_check('voc', root) == 0 and 'OK' in capsys.readouterr().out
    v = _vdir(root)
    jpg = v / 'JPEGImages' / f'{ids[0]}.jpg'; jpg.write_bytes(jpg.read_bytes()[:200])
    _palette_png(v / 'SegmentationClassAug' / f'{ids[1]}.png', np.full((24, 32), 30, np.uint8))
    _palette_png(v / 'SegmentationClassAug' / f'{ids[2]}.png', np.zeros((5, 5), np.uint8))
    (v / 'SegmentationClassAug' / f'{ids[4]}.png').unlink()
    (v / 'JPEGImages' / f'{ids[5]}.jpg').unlink()
    problems = check_dataset('voc', root, progress=False)
    assert all(isinstance(p, Problem) for p in problems)
    assert [p.file.name for p in problems] == [f'{ids[0]}.jpg', f'{ids[1]}.png', f'{ids[2]}.png', f'{ids[4]}.png', f'{ids[5]}.jpg']
    assert '[30]' in problems[1].message and '(5, 5)' in problems[2].message and 'mask missing' in problems[3].message
    assert cli_data_check('voc', root) == 1
    out = capsys.readouterr().out.splitlines()
    assert sum(str(p.file) in line for p in problems for line in out) == 5


def test_check_unlabeled_list_needs_no_mask(voc):
    root, ids = voc
    (_vdir(root) / 'SegmentationClassAug' / f'{ids[0]}.png').unlink()
    (root / 'train_aug_unlabeled_1-8.txt').write_text(ids[0] + '\n')
    (root / 'train_aug_labeled_1-8.txt').write_text(ids[0] + '\n')
    assert check_dataset('voc', root, 'train_aug_unlabeled_1-8.txt', progress=False) == []
    assert len(check_dataset('voc', root, 'train_aug_labeled_1-8.txt', progress=False)) == 1


def test_check_wrong_root_and_empty_list(tmp_path, voc, capsys):
    p = check_dataset('voc', tmp_path / 'missing', progress=False)
    assert len(p) == 1 and p[0].file == tmp_path / 'missing'
    assert cli_data_check('voc', tmp_path / 'missing') == 1
    assert 'prepare_voc.py' in capsys.readouterr().out
    root, _ = voc
    (root / 'empty.txt').write_text('')
    p = check_dataset('voc', root, 'empty.txt', progress=False)
    assert len(p) == 1 and p[0].file.name == 'empty.txt'


def test_check_cityscapes(city):
    root, _ = city
    assert check_dataset('cityscapes', root, progress=False) == []
    assert check_dataset('cityscapes', root, 'val', progress=False) == []
    assert check_dataset('cityscapes', root, 'extra', progress=False) == []          # train_extra: no mask needed
    lab = cityscapes_paths(root, 'train', 'jena_000078_000019')[1]
    Image.fromarray(np.full((16, 32), 19, np.uint8)).save(lab)                       # trainIds are 0..18
    p = check_dataset('cityscapes', root, progress=False)
    assert [x.file for x in p] == [lab] and '[19]' in p[0].message
    assert check_dataset('cityscapes', root, num_classes=20, progress=False) == []


def test_check_folder_num_classes(tmp_path, capsys):
    root = tmp_path / 'f'
    write_folder(root)
    assert cli_data_check('folder', root) == 0                        # no class count: checked, and the classes named
    out = capsys.readouterr().out
    assert 'the masks use classes 0, 1, 2' in out and '--num-classes 3' in out, out
    assert check_dataset('folder', root, num_classes=3, progress=False) == []
    assert len(check_dataset('folder', root, 'unlabeled.txt', num_classes=3, progress=False)) == 0
    assert len(check_dataset('folder', root, num_classes=2, progress=False)) == 3          # masks hold 0..2
    (root / 'synthetic.json').write_text(json.dumps({'num_classes': 3, 'seed': 0}))
    assert default_num_classes('folder', root) == 3 and default_num_classes('voc', root) == 3    # generated data
    assert default_num_classes('voc', tmp_path) == 21 and default_num_classes('cityscapes', tmp_path) == 19
    assert default_num_classes('folder', root, 7) == 7
    assert cli_data_check('folder', root) == 0


# ---------------------------------------------------------------- mask checks once, all-ignore masks (issue 12 item 10)
def test_mask_values_are_checked_once_per_sample(voc, monkeypatch):
    import cps_repro.data as data_mod
    root, ids = voc
    calls = []
    real = data_mod.check_mask_values
    monkeypatch.setattr(data_mod, 'check_mask_values', lambda *a, **k: (calls.append(a[1]), real(*a, **k)))
    ds = SegmentationDataset(voc_samples(root, 'train_aug'), TrainTransform(16), 21)
    for epoch in range(3):
        for i in range(len(ds)): ds[(i, epoch * 100 + i)]
    assert len(calls) == len(ds) and len(set(calls)) == len(ds)
    assert mask_dtype(21) == torch.uint8 and mask_dtype(19) == torch.uint8 and mask_dtype(1000) == torch.int64
    big = SegmentationDataset(voc_samples(root, 'train_aug'), None, 1000)
    assert big.mask_dtype == torch.int64 and big[0]['label'].dtype == torch.int64


def test_all_ignore_mask_warns_in_training_and_fails_data_check(voc, capsys):
    root, ids = voc
    _palette_png(_vdir(root) / 'SegmentationClassAug' / f'{ids[0]}.png', np.full((24, 32), 255, np.uint8))
    assert is_all_ignore(torch.full((2, 2), 255, dtype=torch.uint8)) and not is_all_ignore(torch.tensor([0, 255]))
    ds = SegmentationDataset(voc_samples(root, ids=ids[:2]), TrainTransform(16), 21)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for s in range(3): ds[(0, s)]; ds[(1, s)]
    assert len(w) == 1 and f'{ids[0]}.png' in str(w[0].message) and 'ignore value 255' in str(w[0].message)
    problems = check_dataset('voc', root, progress=False)
    assert [p.file.name for p in problems] == [f'{ids[0]}.png'] and 'trains nothing' in problems[0].message
    assert cli_data_check('voc', root) == 1
    assert f'{ids[0]}.png: every pixel' in capsys.readouterr().out
    for i in ids: _palette_png(_vdir(root) / 'SegmentationClassAug' / f'{i}.png', np.full((24, 32), 255, np.uint8))
    problems = check_dataset('voc', root, 'val', progress=False)
    assert 'masks are ignore-only' in problems[-1].message and len(problems) == 1 + len(read_ids(root, 'val'))


def read_ids(root, name):
    return (_vdir(root) / 'ImageSets' / 'Segmentation' / f'{name}.txt').read_text().split()


def test_check_masks_at_data_building_warns_once_and_marks_masks_checked(voc, monkeypatch):
    import cps_repro.data as data_mod
    root, ids = voc
    ds = SegmentationDataset(voc_samples(root, 'train_aug'), TrainTransform(16), 21)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert ds.check_masks() == [] and ds._checked == set(range(len(ds)))
    monkeypatch.setattr(data_mod, 'check_mask_values', lambda *a, **k: pytest.fail('checked twice'))
    ds[(0, 1)]; ds[(1, 2)]                                           # the workers' view: no second check
    for i in ids: _palette_png(_vdir(root) / 'SegmentationClassAug' / f'{i}.png', np.full((24, 32), 255, np.uint8))
    monkeypatch.undo()
    all_ignored = SegmentationDataset(voc_samples(root, 'train_aug'), TrainTransform(16), 21)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert len(all_ignored.check_masks()) == len(all_ignored)
    assert len(w) == 1 and 'every one of the' in str(w[0].message) and 'loss will be 0' in str(w[0].message)
    with pytest.raises(DataError, match=r'\[21\]'):
        _palette_png(_vdir(root) / 'SegmentationClassAug' / f'{ids[0]}.png', np.full((24, 32), 21, np.uint8))
        SegmentationDataset(voc_samples(root, ids=ids[:1]), TrainTransform(16), 21).check_masks()


def test_too_few_images_for_one_batch_names_options_that_exist():
    "Issue 26: the message advised 'pass drop_last=False', which is no option of any command or config."
    from cps_repro.data import InfiniteBatchSampler, VirtualEpochSampler
    with pytest.raises(ValueError) as e: InfiniteBatchSampler(VirtualEpochSampler(3, 0), batch_size=8)
    assert 'drop_last' not in str(e.value) and '--set batch_size=N' in str(e.value)
