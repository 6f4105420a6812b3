"""Tests of data_scripts/: downloads (resume, retries, md5), safe extraction, and the VOC + SBD and Cityscapes
preparation run end to end on tiny fake archives built here (offline: file:// URLs and a local HTTP server)."""
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / 'data_scripts'
sys.path.insert(0, str(SCRIPTS))

import _common  # noqa: E402
import fetch_partitions  # noqa: E402
import prepare_cityscapes  # noqa: E402
import prepare_voc  # noqa: E402
from _common import (ChecksumError, DownloadError, PrepareError, UnsafeArchiveError, download,  # noqa: E402
                     extract, file_uri)
from cps_repro.data import check_dataset, read_mask, voc_palette, voc_samples  # noqa: E402

scipy_io = pytest.importorskip('scipy.io')

SHARED_PARTITIONS = REPO.parent / 'shared' / 'reference' / 'partitions'


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ------------------------------------------------------------------------------------------------ archive builders
def add_bytes(tf: tarfile.TarFile, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def jpeg_bytes(rng, h=12, w=16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(buf, format='JPEG')
    return buf.getvalue()


def palette_png_bytes(mask) -> bytes:
    im = Image.fromarray(mask.astype(np.uint8))
    im.putpalette(voc_palette().tobytes())
    buf = io.BytesIO()
    im.save(buf, format='PNG')
    return buf.getvalue()


def mat_bytes(mask) -> bytes:
    buf = io.BytesIO()
    scipy_io.savemat(buf, {'GTcls': {'Segmentation': mask.astype(np.uint8),
                                     'CategoriesPresent': np.unique(mask[mask > 0]).astype(np.uint8)}})
    return buf.getvalue()


def list_bytes(ids) -> bytes:
    return ''.join(f'{i}\n' for i in ids).encode()


# VOC train / val, SBD train / val: the fake ids cover every case of the train_aug rule
VOC_TRAIN = ['2007_000001', '2007_000002']
VOC_VAL = ['2007_000003', '2007_000004']
SBD_TRAIN = ['2008_000005', '2007_000001', '2007_000003']      # 2007_000003 is VOC val: excluded from train_aug
SBD_VAL = ['2008_000006', '2008_000007']
SBD_ONLY_IMAGE = '2008_000007'                                 # has no JPEG in VOC's JPEGImages
TRAIN_AUG = ['2007_000001', '2007_000002', '2008_000005', '2008_000006', '2008_000007']
H, W = 12, 16


def voc_mask(k: int) -> np.ndarray:
    "A VOC-style mask: classes 1-20 with a 255 boundary ring."
    m = np.full((H, W), k % 20 + 1, dtype=np.uint8)
    m[:, : W // 2] = 0
    m[0, :] = m[-1, :] = 255
    return m


def sbd_mask(k: int) -> np.ndarray:
    "An SBD-style mask: different from the VOC one of the same id, no 255."
    m = np.zeros((H, W), dtype=np.uint8)
    m[H // 2:, :] = (k * 3) % 20 + 1
    return m


def build_voc_tar(path: Path, extra_members=()) -> dict:
    rng = np.random.default_rng(0)
    masks = {}
    with tarfile.open(path, 'w') as tf:
        base = 'VOCdevkit/VOC2012'
        for k, i in enumerate(sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL) - {SBD_ONLY_IMAGE})):
            add_bytes(tf, f'{base}/JPEGImages/{i}.jpg', jpeg_bytes(rng))
        for k, i in enumerate(VOC_TRAIN + VOC_VAL):
            masks[i] = voc_mask(k)
            add_bytes(tf, f'{base}/SegmentationClass/{i}.png', palette_png_bytes(masks[i]))
        add_bytes(tf, f'{base}/ImageSets/Segmentation/train.txt', list_bytes(VOC_TRAIN))
        add_bytes(tf, f'{base}/ImageSets/Segmentation/val.txt', list_bytes(VOC_VAL))
        add_bytes(tf, f'{base}/ImageSets/Segmentation/trainval.txt', list_bytes(VOC_TRAIN + VOC_VAL))
        for name, data in extra_members:
            add_bytes(tf, name, data)
    return masks


def build_sbd_tgz(path: Path) -> dict:
    rng = np.random.default_rng(1)
    masks = {}
    with tarfile.open(path, 'w:gz') as tf:
        base = 'benchmark_RELEASE/dataset'
        for k, i in enumerate(sorted(set(SBD_TRAIN + SBD_VAL))):
            masks[i] = sbd_mask(k)
            add_bytes(tf, f'{base}/cls/{i}.mat', mat_bytes(masks[i]))
            add_bytes(tf, f'{base}/inst/{i}.mat', mat_bytes(masks[i]))          # not needed: must not be extracted
            add_bytes(tf, f'{base}/img/{i}.jpg', jpeg_bytes(rng))
        add_bytes(tf, f'{base}/train.txt', list_bytes(SBD_TRAIN))
        add_bytes(tf, f'{base}/val.txt', list_bytes(SBD_VAL))
        add_bytes(tf, 'benchmark_RELEASE/benchmark_code_RELEASE/README.txt', b'code, not needed\n')
    return masks


@pytest.fixture(scope='module')
def voc_archives(tmp_path_factory):
    d = tmp_path_factory.mktemp('voc_archives')
    voc, sbd = d / prepare_voc.VOC_ARCHIVE, d / prepare_voc.SBD_ARCHIVE
    voc_masks, sbd_masks = build_voc_tar(voc), build_sbd_tgz(sbd)
    return {'voc': voc, 'sbd': sbd, 'voc_md5': md5(voc.read_bytes()), 'sbd_md5': md5(sbd.read_bytes()),
            'voc_masks': voc_masks, 'sbd_masks': sbd_masks}


def voc_args(a, root, *extra, voc_url=None, sbd_url=None, voc_md5=None):
    return ['--root', str(root), '--voc-url', voc_url or file_uri(a['voc']), '--sbd-url', sbd_url or file_uri(a['sbd']),
            '--voc-md5', voc_md5 or a['voc_md5'], '--sbd-md5', a['sbd_md5'], '--no-progress', *extra]


def snapshot(root: Path, skip=('downloads',)) -> dict:
    "{relative path: (mtime_ns, sha256)} of every file under root outside `skip`."
    out = {}
    for p in sorted(root.rglob('*')):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in skip:
            out[str(rel)] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


# ------------------------------------------------------------------------------------------------ VOC end to end
@pytest.fixture(scope='module')
def voc_prepared(voc_archives, tmp_path_factory):
    root = tmp_path_factory.mktemp('voc') / 'data'
    rc = prepare_voc.main(voc_args(voc_archives, root, '--no-partitions'))
    assert rc == 0
    return root


def test_voc_layout_lists_and_masks(voc_prepared, voc_archives):
    v = voc_prepared / 'VOCdevkit' / 'VOC2012'
    seg = v / 'ImageSets' / 'Segmentation'
    assert (seg / 'train_aug.txt').read_text().split() == TRAIN_AUG
    assert (seg / 'val.txt').read_text().split() == VOC_VAL
    ids = TRAIN_AUG + VOC_VAL
    assert sorted(p.stem for p in (v / 'SegmentationClassAug').glob('*.png')) == sorted(ids)
    for i in ids:   # VOC-annotated ids keep VOC's mask (with its 255 ring), the others get SBD's class mask
        expected = voc_archives['voc_masks'][i] if i in VOC_TRAIN + VOC_VAL else voc_archives['sbd_masks'][i]
        got = read_mask(v / 'SegmentationClassAug' / f'{i}.png').numpy()
        np.testing.assert_array_equal(got, expected, err_msg=i)
    assert 255 in read_mask(v / 'SegmentationClassAug' / '2007_000001.png')       # in SBD too: VOC wins
    sbd_only = Image.open(v / 'SegmentationClassAug' / '2008_000005.png')
    assert sbd_only.mode == 'P' and sbd_only.getpalette()[:9] == voc_palette().reshape(-1).tolist()[:9]
    assert (v / 'JPEGImages' / f'{SBD_ONLY_IMAGE}.jpg').is_file()                  # copied from SBD's img/
    assert not list((voc_prepared / 'SBD').rglob('inst')) and not list((voc_prepared / 'SBD').rglob('README.txt'))
    assert (voc_prepared / 'downloads' / prepare_voc.VOC_ARCHIVE).is_file()
    assert not list((voc_prepared / 'downloads').glob('*.part'))


def test_voc_output_reads_with_the_library(voc_prepared):
    assert check_dataset('voc', voc_prepared, progress=False) == []
    samples = voc_samples(voc_prepared, 'train_aug')
    assert [s.id for s in samples] == TRAIN_AUG


def test_voc_rerun_skips_and_keeps_output(voc_archives, tmp_path, capsys):
    root = tmp_path / 'data'
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions')) == 0
    before = snapshot(root)
    capsys.readouterr()
    gone = 'file:///nonexistent/archive.tar'      # nothing may be downloaded again
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions', voc_url=gone, sbd_url=gone)) == 0
    out = capsys.readouterr().out
    assert snapshot(root) == before
    assert out.count('already present (md5 ok)') == 4 and out.count('already extracted') == 4   # step line + summary
    assert 'cps-repro data check --dataset voc --root' in out and 'cps-repro train --preset voc_cps_cutmix' in out
    assert 'fetch_partitions.py' in out                                          # lists were skipped: say how


def test_voc_resumes_interrupted_conversion_and_extraction(voc_archives, tmp_path):
    root = tmp_path / 'data'
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions')) == 0
    before = snapshot(root)
    aug = root / 'VOCdevkit/VOC2012/SegmentationClassAug'
    (aug / '2008_000006.png').unlink()                                            # conversion interrupted
    (root / _common.extract_marker(voc_archives['voc'], root).name).unlink()      # extraction interrupted
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions')) == 0
    after = snapshot(root)
    assert after.keys() == before.keys()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {'VOCdevkit/VOC2012/SegmentationClassAug/2008_000006.png',   # written again
                       f'.{prepare_voc.VOC_ARCHIVE}.extracted'}                      # every file kept, marker rewritten
    assert before['VOCdevkit/VOC2012/SegmentationClassAug/2008_000006.png'][1] == \
        after['VOCdevkit/VOC2012/SegmentationClassAug/2008_000006.png'][1]    # same content, written again


def test_voc_never_clobbers_finished_output(voc_archives, tmp_path, capsys):
    root = tmp_path / 'data'
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions')) == 0
    lst = root / 'VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt'
    lst.write_text('2007_000001\n')
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions')) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err and lst.read_text() == '2007_000001\n'
    # an extracted file that differs from the archive is refused too, once the extraction runs again
    jpg = root / 'VOCdevkit/VOC2012/JPEGImages/2007_000002.jpg'
    jpg.write_bytes(b'user data')
    (root / f'.{prepare_voc.VOC_ARCHIVE}.extracted').unlink()
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions')) == 1
    err = capsys.readouterr().err
    assert '2007_000002.jpg exists and differs' in err and jpg.read_bytes() == b'user data'


def test_voc_checksum_mismatch_is_refused(voc_archives, tmp_path, capsys):
    root = tmp_path / 'data'
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions', voc_md5='0' * 32)) == 1
    err = capsys.readouterr().err
    assert 'md5' in err and '0' * 32 in err and '.bad' in err
    dl = root / 'downloads'
    assert not (dl / prepare_voc.VOC_ARCHIVE).exists() and (dl / f'{prepare_voc.VOC_ARCHIVE}.bad').is_file()
    assert not (root / 'VOCdevkit').exists()                                     # nothing was extracted


def test_voc_wrong_preplaced_archive_is_set_aside_and_downloaded(voc_archives, tmp_path, capsys):
    root = tmp_path / 'data'
    (root / 'downloads').mkdir(parents=True)
    (root / 'downloads' / prepare_voc.VOC_ARCHIVE).write_bytes(b'truncated junk')
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions')) == 0
    assert 'moved it to' in capsys.readouterr().out
    assert (root / 'downloads' / f'{prepare_voc.VOC_ARCHIVE}.bad').read_bytes() == b'truncated junk'


def test_voc_path_traversal_member_refused(tmp_path, voc_archives, capsys):
    evil = tmp_path / 'evil' / prepare_voc.VOC_ARCHIVE
    evil.parent.mkdir()
    build_voc_tar(evil, extra_members=[('VOCdevkit/../../escaped.txt', b'x')])
    root = tmp_path / 'a' / 'data'
    args = voc_args(voc_archives, root, '--no-partitions', voc_url=file_uri(evil), voc_md5=md5(evil.read_bytes()))
    assert prepare_voc.main(args) == 1
    assert 'outside the destination' in capsys.readouterr().err
    assert not (tmp_path / 'a' / 'escaped.txt').exists() and not (tmp_path / 'escaped.txt').exists()


def test_voc_unreachable_host_says_what_to_do(voc_archives, tmp_path, capsys):
    root = tmp_path / 'data'
    assert prepare_voc.main(voc_args(voc_archives, root, '--no-partitions', voc_url='file:///nonexistent/x.tar')) == 1
    err = capsys.readouterr().err
    assert 'cannot download file:///nonexistent/x.tar' in err and str(root / 'downloads' / prepare_voc.VOC_ARCHIVE) in err


def test_voc_without_scipy_says_how_to_install(monkeypatch, voc_archives, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, 'scipy.io', None)             # `from scipy.io import loadmat` now fails
    assert prepare_voc.main(voc_args(voc_archives, tmp_path / 'data', '--no-partitions')) == 1
    assert 'pip install scipy' in capsys.readouterr().err
    assert not (tmp_path / 'data').exists()                        # checked before downloading anything


def test_read_sbd_mask_rejects_bad_files(tmp_path):
    p = tmp_path / 'x.mat'
    scipy_io.savemat(p, {'other': np.zeros((2, 2))})
    with pytest.raises(PrepareError, match='GTcls.Segmentation'):
        prepare_voc.read_sbd_mask(p)
    scipy_io.savemat(p, {'GTcls': {'Segmentation': np.full((2, 2), 42, np.uint8)}})
    with pytest.raises(PrepareError, match=r'class ids \[42\]'):
        prepare_voc.read_sbd_mask(p)


def test_build_train_aug_rule():
    assert prepare_voc.build_train_aug(VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL) == TRAIN_AUG
    assert prepare_voc.build_train_aug(['a', 'b'], ['b'], ['c'], ['a', 'd']) == ['a', 'c', 'd']


def test_voc_fetches_partitions_from_a_source(voc_archives, tmp_path, capsys):
    if not SHARED_PARTITIONS.is_dir():
        pytest.skip('the reference copy of the official lists (outside the repository) is not present')
    root = tmp_path / 'data'
    rc = prepare_voc.main(voc_args(voc_archives, root, '--partitions-source', str(SHARED_PARTITIONS)))
    out = capsys.readouterr().out
    assert rc == 0
    assert (root / 'partitions/pascal_voc/subset_train_aug/train_aug_labeled_1-8.txt').is_file()
    assert not (root / 'partitions/city').exists()
    assert 'differ in' in out                  # the fake train_aug is not the official one: a warning says so


# ------------------------------------------------------------------------------------------------ downloads
class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        srv.requests.append(self.headers.get('Range'))
        if self.path != '/file':
            self.send_error(404)
            return
        data, start = srv.data, 0
        rng = self.headers.get('Range')
        if rng and srv.ranges:
            start = int(re.match(r'bytes=(\d+)-', rng)[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(data)}')
                self.end_headers()
                return
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if srv.truncate_first and len(srv.requests) == 1:
            body = body[: len(body) // 2]                       # the connection drops half-way
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    srv.data = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    srv.requests, srv.ranges, srv.truncate_first = [], True, False
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}/file'
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _dl(server, dest, **kw):
    return download(server.url, dest, md5(server.data), backoff=0, progress=False, log=lambda *a: None, **kw)


def test_download_resumes_a_partial_file_with_range(server, tmp_path):
    dest = tmp_path / 'a.tar'
    (tmp_path / 'a.tar.part').write_bytes(server.data[:100_000])
    assert _dl(server, dest) == 'downloaded'
    assert dest.read_bytes() == server.data and not (tmp_path / 'a.tar.part').exists()
    assert server.requests == ['bytes=100000-']


def test_download_complete_part_answered_416(server, tmp_path):
    (tmp_path / 'a.tar.part').write_bytes(server.data)
    assert _dl(server, tmp_path / 'a.tar') == 'downloaded'
    assert server.requests == [f'bytes={len(server.data)}-']


def test_download_bad_partial_file_is_restarted(server, tmp_path):
    (tmp_path / 'a.tar.part').write_bytes(b'\0' * 100_000)           # a stale part of some other file
    assert _dl(server, tmp_path / 'a.tar') == 'downloaded'
    assert (tmp_path / 'a.tar').read_bytes() == server.data
    assert server.requests == ['bytes=100000-', None]                  # resumed, md5 wrong, restarted from 0


def test_download_server_without_ranges_restarts(server, tmp_path):
    server.ranges = False
    (tmp_path / 'a.tar.part').write_bytes(server.data[:5])
    assert _dl(server, tmp_path / 'a.tar') == 'downloaded'
    assert (tmp_path / 'a.tar').read_bytes() == server.data


def test_download_retries_a_dropped_connection(server, tmp_path):
    server.truncate_first = True
    assert _dl(server, tmp_path / 'a.tar') == 'downloaded'
    assert (tmp_path / 'a.tar').read_bytes() == server.data
    assert server.requests[0] is None and server.requests[1] == f'bytes={len(server.data) // 2}-'


def test_download_permanent_error_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match='404'):
        download(server.url.replace('/file', '/missing'), tmp_path / 'a.tar', md5(b''), backoff=0, progress=False)
    assert server.requests == [None]


def test_download_checksum_mismatch_keeps_file_aside(tmp_path):
    src = tmp_path / 'src.bin'
    src.write_bytes(b'payload')
    dest = tmp_path / 'dl' / 'a.tar'
    with pytest.raises(ChecksumError, match='kept aside'):
        download(file_uri(src), dest, md5(b'other'), progress=False)
    assert not dest.exists() and not dest.with_name('a.tar.part').exists()
    assert dest.with_name('a.tar.bad').read_bytes() == b'payload'


def test_download_file_url_restarts_partial_file(tmp_path):
    src = tmp_path / 'src.bin'
    src.write_bytes(b'0123456789' * 1000)
    dest = tmp_path / 'a.tar'
    dest.with_name('a.tar.part').write_bytes(b'garbage')
    assert download(file_uri(src), dest, md5(src.read_bytes()), progress=False) == 'downloaded'
    assert dest.read_bytes() == src.read_bytes()
    assert download('file:///nonexistent', dest, md5(src.read_bytes()), progress=False) == 'already present'


# ------------------------------------------------------------------------------------------------ extraction
def test_extract_refuses_traversal_and_absolute_tar_members(tmp_path):
    for bad in ('../evil.txt', 'a/../../evil.txt', '/abs/evil.txt'):
        arc = tmp_path / 'x.tar'
        with tarfile.open(arc, 'w') as tf:
            add_bytes(tf, 'ok.txt', b'ok')
            add_bytes(tf, bad, b'evil')
        dest = tmp_path / 'out' / 'dest'
        with pytest.raises(UnsafeArchiveError, match='outside the destination'):
            extract(arc, dest, progress=False)
        assert not (tmp_path / 'out' / 'evil.txt').exists() and not (tmp_path / 'evil.txt').exists()
        assert not _common.extract_marker(arc, dest).exists()


def test_extract_refuses_traversal_zip_member(tmp_path):
    arc = tmp_path / 'x.zip'
    with zipfile.ZipFile(arc, 'w') as zf:
        zf.writestr('../../evil.txt', b'evil')
    with pytest.raises(UnsafeArchiveError):
        extract(arc, tmp_path / 'a' / 'b', progress=False)
    assert not (tmp_path / 'evil.txt').exists()


def test_extract_never_creates_links(tmp_path):
    arc = tmp_path / 'x.tar'
    with tarfile.open(arc, 'w') as tf:
        add_bytes(tf, 'd/ok.txt', b'ok')
        link = tarfile.TarInfo('d/link')
        link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tf.addfile(link)
    stats = extract(arc, tmp_path / 'out', progress=False)
    assert (stats.written, stats.other) == (1, 1)
    assert not (tmp_path / 'out/d/link').exists() and not (tmp_path / 'out/d/link').is_symlink()
    assert extract(arc, tmp_path / 'out', progress=False).done_before


def test_extract_damaged_archive_is_a_clear_error(tmp_path):
    arc = tmp_path / 'x.tgz'
    arc.write_bytes(b'not a tar at all')
    with pytest.raises(PrepareError, match='not a readable archive'):
        extract(arc, tmp_path / 'out', progress=False)
    with tarfile.open(arc, 'w:gz') as tf:
        add_bytes(tf, 'a.bin', np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    arc.write_bytes(arc.read_bytes()[:100_000])                          # a truncated download
    with pytest.raises(PrepareError, match='damaged'):
        extract(arc, tmp_path / 'out2', progress=False)
    assert not (tmp_path / 'out2' / 'a.bin').exists() and not _common.extract_marker(arc, tmp_path / 'out2').exists()


# ------------------------------------------------------------------------------------------------ Cityscapes
CITY = {'train': ['aachen_000000_000019', 'jena_000001_000019'], 'val': ['lindau_000000_000019'],
        'test': ['berlin_000000_000019']}
# labelIds 0..33 -> trainIds, the standard table written out independently of the script
EXPECTED_TRAIN_IDS = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                  255, 255, 16, 17, 18]
CH, CW = 4, 34


def png_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format='PNG')
    return buf.getvalue()


def city_label_ids() -> np.ndarray:
    return np.tile(np.arange(CW, dtype=np.uint8), (CH, 1))


def build_city_zips(d: Path, extra: bool = False):
    rng = np.random.default_rng(4)
    with zipfile.ZipFile(d / prepare_cityscapes.IMAGES_ZIP, 'w') as zf:
        zf.writestr('README', b'images readme')
        zf.writestr('license.txt', b'license')
        for sub, ids in CITY.items():
            for i in ids:
                img = (rng.random((CH, CW, 3)) * 255).astype(np.uint8)
                zf.writestr(f'leftImg8bit/{sub}/{i.split("_")[0]}/{i}_leftImg8bit.png', png_bytes(img))
    with zipfile.ZipFile(d / prepare_cityscapes.LABELS_ZIP, 'w') as zf:
        zf.writestr('README', b'a different readme for the labels')
        for sub, ids in CITY.items():
            for i in ids:
                base = f'gtFine/{sub}/{i.split("_")[0]}/{i}_gtFine'
                zf.writestr(f'{base}_labelIds.png', png_bytes(city_label_ids()))
                zf.writestr(f'{base}_color.png', png_bytes(np.zeros((CH, CW, 3), np.uint8)))
    if extra:
        with zipfile.ZipFile(d / prepare_cityscapes.EXTRA_ZIP, 'w') as zf:
            zf.writestr('leftImg8bit/train_extra/bochum/bochum_000000_000313_leftImg8bit.png',
                        png_bytes(np.zeros((CH, CW, 3), np.uint8)))


def city_args(zips, root, *extra):
    return ['--zips', str(zips), '--root', str(root), '--no-progress', *extra]


def test_cityscapes_end_to_end_and_rerun(tmp_path, capsys):
    zips, root = tmp_path / 'zips', tmp_path / 'city'
    zips.mkdir()
    build_city_zips(zips, extra=True)
    assert prepare_cityscapes.main(city_args(zips, root, '--no-partitions', '--extra')) == 0
    out = capsys.readouterr().out
    for sub in ('train', 'val'):
        for i in CITY[sub]:
            p = root / 'gtFine' / sub / i.split('_')[0] / f'{i}_gtFine_labelTrainIds.png'
            im = Image.open(p)
            assert im.mode == 'L'
            np.testing.assert_array_equal(np.asarray(im)[0], EXPECTED_TRAIN_IDS)
    assert not list((root / 'gtFine' / 'test').rglob('*labelTrainIds.png'))    # no public test labels
    assert not (root / 'README').exists() and not (root / 'license.txt').exists()
    assert (root / 'leftImg8bit/train_extra/bochum/bochum_000000_000313_leftImg8bit.png').is_file()
    assert check_dataset('cityscapes', root, progress=False) == []
    assert 'cps-repro data check --dataset cityscapes --root' in out and '3 converted' in out
    before = snapshot(root)
    assert prepare_cityscapes.main(city_args(zips, root, '--no-partitions', '--extra')) == 0
    assert snapshot(root) == before
    assert capsys.readouterr().out.count('already extracted') == 6   # step line + summary


def test_cityscapes_missing_zip_says_where_to_get_it(tmp_path, capsys):
    (tmp_path / 'zips').mkdir()
    assert prepare_cityscapes.main(city_args(tmp_path / 'zips', tmp_path / 'city', '--no-partitions')) == 1
    err = capsys.readouterr().err
    assert prepare_cityscapes.IMAGES_ZIP in err and prepare_cityscapes.LABELS_ZIP in err
    assert 'https://www.cityscapes-dataset.com/downloads/' in err
    assert not (tmp_path / 'city').exists()


def test_cityscapes_builtin_table():
    lut = prepare_cityscapes.builtin_lut()
    assert lut[:34].tolist() == EXPECTED_TRAIN_IDS and (lut[34:] == 255).all()
    assert sorted(set(lut.tolist()) - {255}) == list(range(19))
    np.testing.assert_array_equal(prepare_cityscapes.to_train_ids(city_label_ids(), lut)[0], EXPECTED_TRAIN_IDS)
    if prepare_cityscapes.cityscapesscripts_lut() is None:
        assert 'built-in' in prepare_cityscapes.label_lut()[1]


def test_cityscapes_uses_cityscapesscripts_when_installed(monkeypatch):
    Label = namedtuple('Label', 'name id trainId')
    labels_mod = ModuleType('cityscapesscripts.helpers.labels')
    labels_mod.labels = [Label('road', 7, 0), Label('sky', 23, 1), Label('void', 5, 255), Label('plate', -1, -1)]
    for name, mod in (('cityscapesscripts', ModuleType('cityscapesscripts')),
                      ('cityscapesscripts.helpers', ModuleType('cityscapesscripts.helpers')),
                      ('cityscapesscripts.helpers.labels', labels_mod)):
        monkeypatch.setitem(sys.modules, name, mod)
    lut, source = prepare_cityscapes.label_lut()
    assert source == 'cityscapesscripts.helpers.labels'
    assert (lut[7], lut[23], lut[5], lut[8], lut[255]) == (0, 1, 255, 255, 255)


def test_cityscapes_builtin_table_matches_cityscapesscripts():
    pytest.importorskip('cityscapesscripts.helpers.labels')
    np.testing.assert_array_equal(prepare_cityscapes.cityscapesscripts_lut(), prepare_cityscapes.builtin_lut())


# ------------------------------------------------------------------------------------------------ partitions, CLIs
def test_fetch_partitions_wrapper(tmp_path, capsys):
    if not SHARED_PARTITIONS.is_dir():
        pytest.skip('the reference copy of the official lists (outside the repository) is not present')
    root = tmp_path / 'partitions'
    assert fetch_partitions.main([str(root), '--source', str(SHARED_PARTITIONS), '--datasets', 'cityscapes']) == 0
    assert (root / 'city/config_new/train.txt').is_file() and not (root / 'pascal_voc').exists()
    assert fetch_partitions.main([str(root), '--source', str(tmp_path / 'nowhere')]) == 1
    assert 'error' in capsys.readouterr().out


@pytest.mark.parametrize('script, flags', [
    ('prepare_voc.py', ['--root', '--voc-url', '--sbd-url', '--download-dir', '--voc-md5', '--no-partitions']),
    ('prepare_cityscapes.py', ['--zips', '--root', '--extra', '--no-partitions']),
    ('fetch_partitions.py', ['--source', '--datasets'])])
def test_scripts_run_as_commands(script, flags):
    r = subprocess.run([sys.executable, str(SCRIPTS / script), '--help'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for f in flags:
        assert f in r.stdout


def test_download_unreachable_says_nothing_was_kept_when_nothing_arrived(tmp_path):
    "The message claimed a `.part` file 'is kept' when none existed (issue 12, item 14)."
    with pytest.raises(DownloadError) as err:
        download('http://127.0.0.1:9/x.tar', tmp_path / 'x.tar', md5(b''), retries=1, backoff=0, timeout=2, progress=False,
                 log=lambda *a: None)
    assert 'nothing was downloaded' in str(err.value) and 'is kept' not in str(err.value)
