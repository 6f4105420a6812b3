"""Tests of cps_repro.partitions: list parsing/writing, new partitions, the registry, split_files, fetch and verify."""
import os
import re
import shutil
from pathlib import Path

import pytest

from cps_repro.partitions import (
    PINNED_COMMIT, REGISTRY, FetchError, Partition, city_entry, city_entry_id, cli_fetch, cli_verify, fetch,
    file_sha256, labeled_count, make_partition, make_partitions, read_list, registry_file, split_files, train_aug_ids,
    verify, write_city_list, write_id_list, write_mini_official_lists)

SHARED = Path(__file__).resolve().parents[2] / 'shared'
OFFICIAL = SHARED / 'reference' / 'partitions'
VOC = 'pascal_voc/subset_train_aug'
CITY = 'city/config_new'


@pytest.fixture
def official():
    if not (OFFICIAL / 'README.md').is_file():
        pytest.skip(f'reference copy of the official lists not found at {OFFICIAL}')
    return OFFICIAL


@pytest.fixture
def official_copy(official, tmp_path):
    dst = tmp_path / 'partitions'
    shutil.copytree(official, dst)
    return dst


@pytest.fixture
def mini(tmp_path):
    root = tmp_path / 'mini'
    return root, write_mini_official_lists(root, seed=1)


def all_files(d):
    return sorted(p.relative_to(d).as_posix() for p in Path(d).rglob('*') if p.is_file())


# ---------------------------------------------------------------- reading and writing lists

@pytest.mark.parametrize('data', [b'a_1\nb_2\nc_3\n', b'a_1\r\nb_2\r\nc_3\r\n', b'a_1\r\nb_2\r\nc_3',
                                  b'\n\na_1\n  b_2  \n\nc_3', b'a_1\nb_2\r\nc_3'])
def test_read_list_line_endings(tmp_path, data):
    p = tmp_path / 'l.txt'
    p.write_bytes(data)
    assert read_list(p) == ['a_1', 'b_2', 'c_3']


def test_read_list_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'missing\.txt does not exist'):
        read_list(tmp_path / 'missing.txt')
    with pytest.raises(FileNotFoundError, match='is a directory'):
        read_list(tmp_path)
    (tmp_path / 'blank.txt').write_bytes(b'\r\n  \n')
    with pytest.raises(ValueError, match=r'blank\.txt is empty'):
        read_list(tmp_path / 'blank.txt')
    (tmp_path / 'bin.txt').write_bytes(b'\xff\xfe\x00')
    with pytest.raises(ValueError, match=r'bin\.txt is not UTF-8'):
        read_list(tmp_path / 'bin.txt')


def test_write_id_list_formats_and_refuses_overwrite(tmp_path):
    p = tmp_path / 'sub' / 'ids.txt'
    write_id_list(p, ['2007_000032', '2007_000039'])
    assert p.read_bytes() == b'2007_000032\n2007_000039\n'
    with pytest.raises(FileExistsError, match='overwrite=True'):
        write_id_list(p, ['2008_000001'])
    assert p.read_bytes() == b'2007_000032\n2007_000039\n'
    write_id_list(p, ['x_1', 'y_2'], crlf=True, final_newline=False, overwrite=True)
    assert p.read_bytes() == b'x_1\r\ny_2'
    assert read_list(p) == ['x_1', 'y_2']
    assert all_files(tmp_path) == ['sub/ids.txt']          # no temporary files


@pytest.mark.parametrize('ids, match', [([], 'no ids'), (['a', 'a'], 'duplicate'), (['a b'], 'bad id'),
                                        ([''], 'bad id'), ([3], 'bad id'), (['a\tb'], 'bad id')])
def test_write_id_list_bad_ids(tmp_path, ids, match):
    with pytest.raises(ValueError, match=match):
        write_id_list(tmp_path / 'x.txt', ids)
    assert not (tmp_path / 'x.txt').exists()


def test_city_entry_round_trip():
    line = city_entry('train', 'jena_000078_000019')
    assert line == '/images/train/jena_000078_000019.png\t/segmentation/train/jena_000078_000019_gtFine.png'
    assert city_entry_id(line) == ('train', 'jena_000078_000019')
    coarse = ('/images/train_extra/heilbronn_000000_000465.png\t'
              '/segmentation/train_extra/heilbronn_000000_000465_gtCoarse.png')
    assert city_entry_id(coarse) == ('train_extra', 'heilbronn_000000_000465')
    assert city_entry('train_extra', 'heilbronn_000000_000465', label_suffix='gtCoarse') == coarse


@pytest.mark.parametrize('bad', [
    '/images/train/jena_000078_000019.png /segmentation/train/jena_000078_000019_gtFine.png',   # space, not TAB
    '/images/train/jena_000078_000019.png\t/segmentation/val/jena_000078_000019_gtFine.png',   # subset differs
    '/images/train/jena_000078_000019.png\t/segmentation/train/jena_000078_000020_gtFine.png',  # id differs
    'images/train/a.png\tsegmentation/train/a_gtFine.png',                                       # no leading /
    '/images/train/jena_000078_000019.png', '2007_000032', ''])
def test_city_entry_id_malformed(bad):
    with pytest.raises(ValueError, match='malformed Cityscapes list line'):
        city_entry_id(bad)


def test_city_entry_id_where_and_bad_names():
    with pytest.raises(ValueError, match=r'train\.txt:7'):
        city_entry_id('nope', where='train.txt:7')
    with pytest.raises(ValueError, match='image_id'):
        city_entry('train', 'a/b')
    with pytest.raises(ValueError, match='label_suffix'):
        city_entry('train', 'a', label_suffix='labelIds')


def test_write_city_list(tmp_path):
    p = write_city_list(tmp_path / 'train.txt', [city_entry('train', 'a_000001_000019'), ('val', 'b_000002_000019')])
    assert [city_entry_id(e) for e in read_list(p)] == [('train', 'a_000001_000019'), ('val', 'b_000002_000019')]
    assert p.read_bytes().count(b'\t') == 2 and p.read_bytes().endswith(b'_gtFine.png\n')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        write_city_list(p, [('train', 'c_1')])
    with pytest.raises(ValueError, match='duplicate'):
        write_city_list(tmp_path / 'd.txt', [('train', 'x'), ('train', 'x')])
    with pytest.raises(ValueError, match='malformed'):
        write_city_list(tmp_path / 'e.txt', ['2007_000032'])
    with pytest.raises(ValueError, match='no entries'):
        write_city_list(tmp_path / 'f.txt', [])
    assert all_files(tmp_path) == ['train.txt']


# ---------------------------------------------------------------- new partitions

IDS = [f'img_{i:04d}' for i in range(500)]


def test_make_partition_disjoint_covering_ordered():
    for r in (16, 8, 4, 2, 3):
        lab, unl = make_partition(IDS, r, seed=7)
        assert len(lab) == -(-len(IDS) // r)
        assert not set(lab) & set(unl) and set(lab) | set(unl) == set(IDS)
        assert lab == [i for i in IDS if i in set(lab)] and unl == [i for i in IDS if i in set(unl)]


def test_make_partitions_nested_and_deterministic():
    parts = make_partitions(IDS, seed=11)
    assert list(parts) == ['1_16', '1_8', '1_4', '1_2']
    assert all(isinstance(p, Partition) for p in parts.values())
    names = list(parts)
    for small, big in zip(names, names[1:]):
        assert set(parts[small].labeled) < set(parts[big].labeled)
    assert make_partitions(IDS, seed=11) == parts
    other = make_partitions(IDS, seed=12)
    assert other['1_8'].labeled != parts['1_8'].labeled
    assert make_partition(IDS, '1_8', 11) == make_partition(IDS, '1-8', 11) == make_partition(IDS, 0.125, 11) \
        == parts['1_8']


def test_make_partitions_not_nested():
    parts = make_partitions(IDS, seed=0, nested=False)
    names = list(parts)
    assert not all(set(parts[a].labeled) < set(parts[b].labeled) for a, b in zip(names, names[1:]))
    for lab, unl in parts.values():
        assert not set(lab) & set(unl) and set(lab) | set(unl) == set(IDS)
    assert make_partitions(IDS, seed=0, nested=False) == parts


def test_labeled_count_matches_official_sizes():
    assert [labeled_count(10582, r) for r in (16, 8, 4, 2)] == [662, 1323, 2646, 5291]
    assert [labeled_count(2975, r) for r in (16, 8, 4, 2)] == [186, 372, 744, 1488]
    assert [labeled_count(1464, r) for r in (16, 8, 4, 2)] == [92, 183, 366, 732]
    for f in REGISTRY:
        if f.role == 'labeled' and f.split.startswith('1_'):
            total = 10582 if f.dataset == 'voc' else 2975
            assert f.entries == labeled_count(total, f.split), f.relpath


@pytest.mark.parametrize('ratio', [1, 0, -4, '1_x', '3/4', 0.3, True, None, 1.5])
def test_make_partition_bad_ratio(ratio):
    with pytest.raises(ValueError, match='bad ratio'):
        make_partition(IDS, ratio, 0)


def test_make_partition_bad_input():
    with pytest.raises(ValueError, match='none unlabeled'):
        make_partition(['a'], 2, 0)
    with pytest.raises(ValueError, match='duplicate'):
        make_partition(['a', 'b', 'a'], 2, 0)
    with pytest.raises(ValueError, match='seed'):
        make_partition(IDS, 2, '0')
    entries = [city_entry('train', f't_{i:06d}_000019') for i in range(20)]     # whole Cityscapes lines work
    lab, unl = make_partition(entries, 4, 0)
    assert len(lab) == 5 and set(lab) | set(unl) == set(entries)


# ---------------------------------------------------------------- registry and split_files

def test_registry_facts():
    assert len(REGISTRY) == 31 and len({f.relpath for f in REGISTRY}) == 31
    assert len(PINNED_COMMIT) == 40
    assert all(re.fullmatch('[0-9a-f]{64}', f.sha256) for f in REGISTRY)
    ps = [f for f in REGISTRY if 'pseudoseg_labeled' in f.relpath]
    assert [(f.split, f.entries, f.crlf, f.final_newline) for f in ps] == [
        ('92', 92, True, False), ('183', 183, True, False), ('366', 366, True, False), ('732', 732, True, False)]
    with pytest.raises(KeyError, match='not an official list'):
        registry_file('pascal_voc/train_aug.txt')


def test_registry_matches_reference_readme(official):
    rows = re.findall(r'^\| (\S+\.txt) \| (\d+) \| ([0-9a-f]{64}) \|$', (official / 'README.md').read_text(), re.M)
    assert len(rows) == 31
    for rel, wc_l, sha in rows:
        f = registry_file(rel)
        assert f.sha256 == sha
        assert f.entries == int(wc_l) + (0 if f.final_newline else 1)


def test_split_files(tmp_path):
    r = tmp_path
    assert split_files('voc', '1_8', r) == {'labeled': r / VOC / 'train_aug_labeled_1-8.txt',
                                            'unlabeled': r / VOC / 'train_aug_unlabeled_1-8.txt'}
    for split, tag in [('92', '1-16'), ('183', '1-8'), ('366', '1-4'), ('732', '1-2')]:
        assert split_files('voc', split, r) == {'labeled': r / VOC / f'pseudoseg_labeled_{tag}.txt', 'unlabeled': None}
    assert split_files('cityscapes', '1_2', r) == {
        'labeled': r / CITY / 'subset_train/train_aug_labeled_1-2.txt',
        'unlabeled': r / CITY / 'subset_train/train_aug_unlabeled_1-2.txt',
        'train': r / CITY / 'train.txt', 'val': r / CITY / 'val.txt'}


@pytest.mark.parametrize('alias', ['1-16', '1/16', 116])
def test_split_files_accepts_aliases(tmp_path, alias):
    assert split_files('voc', alias, tmp_path) == split_files('voc', '1_16', tmp_path)


@pytest.mark.parametrize('dataset, split', [('voc', '1_3'), ('voc', 'full'), ('voc', 93), ('cityscapes', '92'),
                                            ('cityscapes', '732'), ('voc', None)])
def test_split_files_unknown_split(tmp_path, dataset, split):
    with pytest.raises(ValueError, match='valid splits: 1_16, 1_8, 1_4, 1_2'):
        split_files(dataset, split, tmp_path)


def test_split_files_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match='valid datasets: voc, cityscapes'):
        split_files('coco', '1_8', tmp_path)


# ---------------------------------------------------------------- verify on the real lists

def test_verify_official_passes(official, capsys):
    rep = verify(official)
    assert rep.passed(strict=True) and not rep.problems and not rep.missing and len(rep.present) == 31
    assert cli_verify(official) == 0 and cli_verify(official, strict=True) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith('31/31 official lists present, 0 with problems, 4 warnings -> OK')
    assert not any(line.startswith('FAIL') for line in out)


def test_verify_pseudoseg_overlap_is_a_warning(official):
    rep = verify(official)
    assert [w.path.name for w in rep.warnings] == [f'pseudoseg_labeled_1-{r}.txt' for r in (16, 8, 4, 2)]
    for w, last in zip(rep.warnings, ['2008_004822', '2009_001036', '2007_000032', '2009_000662']):
        assert last in w.message and 'known quirk' in w.message
        assert read_list(w.path)[-1] == last


def test_official_facts(official):
    ids = train_aug_ids(official)
    assert len(ids) == len(set(ids)) == 10582
    train = {city_entry_id(e) for e in read_list(official / CITY / 'train.txt')}
    assert len(train) == 2975 and {s for s, _ in train} == {'train'}
    for tag in ('1-16', '1-8', '1-4', '1-2'):
        lab = set(read_list(official / VOC / f'pseudoseg_labeled_{tag}.txt'))
        unl = set(read_list(official / VOC / f'pseudoseg_unlabeled_{tag}.txt'))
        assert len(lab | unl) == 1464 and len(lab & unl) == 1 and lab <= set(ids)


def test_verify_fails_naming_an_edited_voc_file(official_copy, capsys):
    target = official_copy / VOC / 'train_aug_labeled_1-4.txt'
    ids = read_list(target)
    target.write_text('\n'.join(['2099_000001'] + ids[1:]) + '\n')
    rep = verify(official_copy)
    assert not rep.ok and target in rep.bad_files()
    assert any('sha256' in p.message for p in rep.problems if p.path == target)
    assert any('not nested' in p.message for p in rep.problems)       # 1/4 is no longer inside 1/2 ... and 1/8 not in 1/4
    assert all(p.path.parent == official_copy / VOC for p in rep.problems)
    assert cli_verify(official_copy) == 1
    out = capsys.readouterr().out
    assert f'FAIL {target}: sha256' in out and out.strip().endswith('-> FAILED')


def test_verify_fails_naming_an_edited_city_file(official_copy, capsys):
    target = official_copy / CITY / 'val.txt'
    lines = read_list(target)
    target.write_text('\n'.join(lines[:-1] + [city_entry('val', 'munster_999999_000019')]) + '\n')
    rep = verify(official_copy)
    assert set(rep.bad_files()) == {target, official_copy / CITY / 'train_val.txt'}  # train_val = train + val breaks too
    assert cli_verify(official_copy) == 1
    assert f'FAIL {target}' in capsys.readouterr().out


def test_verify_detects_line_ending_change(official_copy):
    target = official_copy / VOC / 'pseudoseg_labeled_1-8.txt'
    target.write_bytes(target.read_bytes().replace(b'\r\n', b'\n') + b'\n')   # same ids, LF + final newline
    rep = verify(official_copy)
    msgs = [p.message for p in rep.problems if p.path == target]
    assert any('expected CRLF' in m for m in msgs) and any('final newline' in m for m in msgs)
    assert len(rep.warnings) == 4          # ids unchanged: the quirk is still only a warning


def test_verify_partial_folder_and_strict(official_copy, capsys):
    shutil.rmtree(official_copy / 'city')
    (official_copy / 'unrelated.txt').write_text('not a list\n')
    rep = verify(official_copy)
    assert rep.ok and not rep.passed(strict=True) and len(rep.missing) == 15 and len(rep.present) == 16
    assert cli_verify(official_copy) == 0
    assert cli_verify(official_copy, strict=True) == 1
    out = capsys.readouterr().out
    assert 'FAIL missing' in out and str(official_copy / CITY / 'train.txt') in out


def test_verify_empty_and_absent_root(tmp_path, capsys):
    assert not verify(tmp_path).ok
    assert cli_verify(tmp_path) == 1
    assert 'no official list files found' in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match='splits fetch'):
        verify(tmp_path / 'absent')
    assert cli_verify(tmp_path / 'absent') == 1


# ---------------------------------------------------------------- verify on the miniature (no reference data needed)

def test_mini_lists_verify(mini):
    root, reg = mini
    rep = verify(root, reg)
    assert rep.passed(strict=True) and len(rep.warnings) == 4
    assert not verify(root).ok                            # the official hashes do not match made-up lists


def test_mini_lists_structure_checks(mini):
    root, reg = mini
    lab = root / CITY / 'subset_train/train_aug_labeled_1-8.txt'
    unl = root / CITY / 'subset_train/train_aug_unlabeled_1-8.txt'
    moved = read_list(unl)[0]
    lab.write_text('\n'.join(read_list(lab) + [moved]) + '\n')             # one id in both lists
    msgs = [p.message for p in verify(root, reg).problems if p.path == lab]
    assert '1 ids also in train_aug_unlabeled_1-8.txt, e.g. ' + '/'.join(city_entry_id(moved)) in msgs
    assert 'labeled set not nested in train_aug_labeled_1-4.txt' in msgs     # the extra id is not in the 1/4 list
    # a PseudoSeg overlap larger than the known one is a problem, not a warning
    ps_lab = root / VOC / 'pseudoseg_labeled_1-4.txt'
    ps_unl = root / VOC / 'pseudoseg_unlabeled_1-4.txt'
    write_id_list(ps_unl, read_list(ps_unl) + read_list(ps_lab)[:1], crlf=True, overwrite=True)
    rep = verify(root, reg)
    assert any(p.path == ps_lab and 'only the last labeled id' in p.message for p in rep.problems)
    assert ps_lab not in [w.path for w in rep.warnings]


# ---------------------------------------------------------------- fetch

def test_fetch_from_file_url_then_already_present(official, tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(official, src)
    dst = tmp_path / 'dst'
    status = fetch(dst, source=src.as_uri(), progress=False)
    assert len(status) == 31 and set(status.values()) == {'downloaded'}
    assert verify(dst).passed(strict=True)
    for f in REGISTRY:
        assert (dst / f.relpath).read_bytes() == (official / f.relpath).read_bytes()
    assert set(fetch(dst, source=src, progress=False).values()) == {'already present'}
    assert not any(n.endswith('.part') for n in all_files(dst))


def test_cli_fetch(official, tmp_path, capsys):
    assert cli_fetch(tmp_path / 'lists', source=official) == 0
    out = capsys.readouterr().out
    assert '31 downloaded' in out and PINNED_COMMIT[:7] in out and '-> OK' in out
    assert cli_fetch(tmp_path / 'voc_only', source=official, datasets=['voc']) == 0
    assert all(p.startswith('pascal_voc/') for p in all_files(tmp_path / 'voc_only'))
    assert cli_fetch(tmp_path / 'x', source=tmp_path / 'no_such_source') == 1
    assert 'error:' in capsys.readouterr().out


def test_fetch_refuses_tampered_source(mini, tmp_path):
    src, reg = mini
    rel = f'{VOC}/pseudoseg_labeled_1-2.txt'
    data = (src / rel).read_bytes()
    (src / rel).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    dst = tmp_path / 'dst'
    with pytest.raises(FetchError, match='sha256 mismatch') as e:
        fetch(dst, source=src, registry=reg, retries=2, backoff=0, progress=False)
    assert 'after 3 attempts' in str(e.value) and str(dst / rel) in str(e.value)
    assert not (dst / rel).exists()
    assert not any(n.endswith('.part') or 'pseudoseg_labeled_1-2' in n for n in all_files(dst))
    assert len(all_files(dst)) == 30                      # the other files did arrive


def test_fetch_existing_files(mini, tmp_path):
    src, reg = mini
    dst = tmp_path / 'dst'
    fetch(dst, source=src, registry=reg, progress=False)
    good = dst / f'{CITY}/test.txt'
    mtime = good.stat().st_mtime_ns
    wrong = dst / f'{VOC}/train_aug_unlabeled_1-16.txt'
    wrong.write_text('2007_000001\n')
    missing = dst / f'{VOC}/train_aug_labeled_1-16.txt'
    missing.unlink()
    with pytest.raises(FetchError) as e:
        fetch(dst, source=src, registry=reg, progress=False)
    msg = str(e.value)
    assert str(wrong) in msg and 'overwrite=True' in msg and 'Delete' in msg
    assert wrong.read_text() == '2007_000001\n' and not missing.exists()   # nothing touched
    status = fetch(dst, source=src, registry=reg, overwrite=True, progress=False)
    assert status[wrong.relative_to(dst).as_posix()] == 'replaced'
    assert status[missing.relative_to(dst).as_posix()] == 'downloaded'
    assert status[good.relative_to(dst).as_posix()] == 'already present' and good.stat().st_mtime_ns == mtime
    assert verify(dst, reg).passed(strict=True)


def test_fetch_source_missing_file_and_unreachable(mini, tmp_path):
    src, reg = mini
    (src / CITY / 'val.txt').unlink()
    with pytest.raises(FetchError, match=r'1 of 31 .*\n.*val\.txt.*after 1 attempt at'):
        fetch(tmp_path / 'a', source=src, registry=reg, backoff=0, progress=False)
    assert len(all_files(tmp_path / 'a')) == 30
    with pytest.raises(FetchError, match='the other 30 files were not tried') as err:
        fetch(tmp_path / 'b', source='http://127.0.0.1:9/', registry=reg, retries=1, backoff=0, progress=False)
    # offline: the message says nothing was fetched (it used to say "2 of 31 ... the others are in place")
    assert str(err.value).startswith('31 of 31 list files to fetch') and 'nothing was fetched' in str(err.value)
    assert not (tmp_path / 'b').exists() or all_files(tmp_path / 'b') == []


def test_fetch_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match='neither a URL nor an existing folder'):
        fetch(tmp_path, source=tmp_path / 'nope')
    with pytest.raises(ValueError, match='valid datasets'):
        fetch(tmp_path, datasets='coco')
    (tmp_path / CITY / 'val.txt').mkdir(parents=True)
    with pytest.raises(FetchError, match='is a directory'):
        fetch(tmp_path, source=tmp_path, progress=False)


def test_fetch_permissions_are_readable(mini, tmp_path):
    src, reg = mini
    fetch(tmp_path / 'dst', source=src, registry=reg, progress=False)
    p = tmp_path / 'dst' / CITY / 'train.txt'
    expected = next(f.sha256 for f in reg if f.relpath == f'{CITY}/train.txt')
    assert p.stat().st_mode & 0o444 == 0o444 and file_sha256(p) == expected


def test_splits_verify_accepts_the_lists_that_synth_writes(tmp_path, capsys):
    from cps_repro.synthetic import synthesize
    from cps_repro.partitions import cli_verify
    synthesize(tmp_path / 'syn', n=24, n_val=8, size=32, progress=False)
    assert cli_verify(tmp_path / 'syn' / 'partitions') == 0           # used to crash with an IndexError
    out = capsys.readouterr().out
    assert 'generated lists of a synthetic dataset' in out and '-> OK' in out


def test_splits_verify_finds_duplicates_in_generated_lists_and_names_them(tmp_path, capsys):
    "Issue 26: a generated list with a repeated id passed `splits verify` (its ids are not VOC ids, so none was counted)."
    from cps_repro.synthetic import synthesize
    synthesize(tmp_path / 'syn', n=24, n_val=8, size=32, progress=False)
    lab = tmp_path / 'syn' / 'partitions' / VOC / 'train_aug_labeled_1-8.txt'
    first = read_list(lab)[0]
    lab.write_text(lab.read_text() + first + '\n')
    assert cli_verify(tmp_path / 'syn' / 'partitions') == 1
    out = capsys.readouterr().out
    assert f'FAIL {lab}: 1 duplicate entries: {first}' in out and '-> FAILED' in out


def test_splits_verify_of_generated_voc_lists_lists_no_missing_cityscapes_files(tmp_path, capsys):
    from cps_repro.synthetic import synthesize
    synthesize(tmp_path / 'syn', n=24, n_val=8, size=32, progress=False)
    assert cli_verify(tmp_path / 'syn' / 'partitions') == 0
    out = capsys.readouterr().out
    assert 'missing' not in out and 'city' not in out and '16/16 official lists present' in out


def test_splits_verify_of_a_file_says_it_is_a_file(tmp_path, capsys):
    from cps_repro.synthetic import synthesize
    synthesize(tmp_path / 'syn', n=24, n_val=8, size=32, progress=False)
    lab = tmp_path / 'syn' / 'partitions' / VOC / 'train_aug_labeled_1-8.txt'
    assert cli_verify(lab) == 1
    out = capsys.readouterr().out
    assert 'is a file, not a partition folder' in out and str(tmp_path / 'syn' / 'partitions') in out and 'does not exist' not in out


def test_data_identity_provenance_and_fingerprint(tmp_path, mini):
    from cps_repro.partitions import data_identity, split_files
    from cps_repro.synthetic import synthesize
    syn = tmp_path / 'syn'
    synthesize(syn, n=24, n_val=8, size=32, progress=False)
    lists = split_files('voc', '1_8', syn / 'partitions')
    a = data_identity(syn, lists)
    assert a['provenance'] == 'generated' and a['marker'].endswith('synthetic.json') and len(a['fingerprint']) == 12
    syn2 = tmp_path / 'syn2'
    synthesize(syn2, n=24, n_val=8, size=32, seed=1, progress=False)
    assert data_identity(syn2, split_files('voc', '1_8', syn2 / 'partitions'))['fingerprint'] != a['fingerprint']
    src, reg = mini                                   # lists whose sha256 is not the registry's: unverified
    assert data_identity(src, split_files('voc', '1_8', src))['provenance'] == 'unverified'
