"""Helpers shared by the dataset preparation scripts in `data_scripts/`.

- `download`: urllib download with retries, resume of a `<name>.part` file (HTTP Range), md5 verification and
  an atomic rename; a file whose md5 is wrong is kept aside as `<name>.bad` and never used.
- `extract`: tar/zip extraction that refuses path-traversal members, never creates links, writes every file
  through a temporary file + rename, skips files already extracted and refuses to replace different ones.
- `create_file`: write a new output file atomically; an existing file is never replaced.
- `Summary`, `run`: the end-of-run summary with the next commands, and error reporting for `main()`.

The scripts import the installed `cps_repro` package for the VOC palette and the official partition lists; this
module only depends on the standard library and tqdm.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import stat
import sys
import tarfile
import time
import gzip
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from tqdm import tqdm

CHUNK = 1 << 20
USER_AGENT = 'cps_repro-data-scripts (python urllib)'


class PrepareError(RuntimeError):
    "A preparation step failed; the message names the file and says what to do."


class ChecksumError(PrepareError):
    "A downloaded (or pre-placed) archive does not have the expected md5."


class DownloadError(PrepareError):
    "A download failed for good (permanent error, or out of retries)."


class UnsafeArchiveError(PrepareError):
    "An archive member would be written outside the destination folder (absolute path, '..', drive letter)."


# ------------------------------------------------------------------------------------------------ checksums
def md5sum(path, progress: bool = True) -> str:
    "Hex md5 of a file, with a tqdm bar (bytes) for big files."
    path = Path(path)
    h = hashlib.md5(usedforsecurity=False)
    size = path.stat().st_size
    with open(path, 'rb') as f, tqdm(total=size, unit='B', unit_scale=True, unit_divisor=1024, leave=False,
                                     desc=f'md5 {path.name}', disable=not progress or size < 64 * CHUNK) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def set_aside(path, bad: Path) -> Path:
    "Move `path` to `bad` (replacing an older bad copy) so that it is never used again; return `bad`."
    os.replace(path, bad)
    return bad


# ------------------------------------------------------------------------------------------------ download
def _is_permanent(err: BaseException) -> bool:
    "Errors that retrying cannot fix: HTTP 4xx (except 408 timeout and 429 rate limit) and missing local files."
    if isinstance(err, urllib.error.HTTPError):
        return 400 <= err.code < 500 and err.code not in (408, 429)
    if isinstance(err, urllib.error.URLError):
        return isinstance(err.reason, (FileNotFoundError, IsADirectoryError, PermissionError))
    return isinstance(err, (FileNotFoundError, IsADirectoryError, PermissionError))


def _range_start(content_range: str | None) -> int | None:
    "The first byte of a `Content-Range: bytes START-END/TOTAL` header, or None."
    m = re.match(r'\s*bytes\s+(\d+)-', content_range or '')
    return int(m[1]) if m else None


class _ShortRead(OSError):
    "The connection closed before Content-Length bytes arrived."


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One request for `url` into `part`, resuming from its current size with an HTTP Range request.

    A server that ignores the range (status 200, file:// URLs) restarts the file from byte 0. Returns whether the
    bytes were appended to an existing partial file. Raises `_ShortRead` when fewer bytes came than announced."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {'User-Agent': USER_AGENT}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        status = getattr(r, 'status', None)
        append = offset > 0 and status == 206 and _range_start(r.headers.get('Content-Range')) == offset
        if status == 206 and not append:
            part.unlink(missing_ok=True)
            raise _ShortRead(f'the server sent a range other than bytes={offset}-: restarting from byte 0')
        start = offset if append else 0
        length = r.headers.get('Content-Length')
        total = start + int(length) if length is not None and length.isdigit() else None
        with open(part, 'ab' if append else 'wb') as f, \
                tqdm(total=total, initial=start, unit='B', unit_scale=True, unit_divisor=1024, leave=False,
                     desc=f'download {part.name[:-len(".part")]}', disable=not progress) as bar:
            for chunk in iter(lambda: r.read(CHUNK), b''):
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got < total:
        raise _ShortRead(f'connection closed after {got} of {total} bytes')
    return append


def _fetch_to_part(url: str, part: Path, retries: int, backoff: float, timeout: float, progress: bool, log) -> bool:
    """Download `url` into `part`, resuming and retrying transient failures (`retries` times, exponential backoff).

    Returns whether the last request appended to a partial file (a resumed download). Raises DownloadError."""
    attempt = 0
    while True:
        try:
            return _fetch_once(url, part, timeout, progress)
        except urllib.error.HTTPError as e:
            if e.code == 416 and part.is_file() and part.stat().st_size > 0:
                return True                        # the range starts at the end: the partial file may be complete
            err = e
        except (OSError, http.client.HTTPException) as e:   # URLError, connection reset, timeout, short read
            err = e
        if _is_permanent(err):
            raise DownloadError(f'cannot download {url}: {err}')
        attempt += 1
        if attempt > retries:
            size = part.stat().st_size if part.is_file() else 0
            kept = (f'the partial file {part} ({size:,} bytes) is kept and the next run resumes it' if size else
                    'nothing was downloaded')
            raise DownloadError(f'cannot download {url}: {err} (after {attempt} attempts; {kept})')
        wait = backoff * 2 ** (attempt - 1)
        log(f'  {type(err).__name__}: {err}; retrying in {wait:.0f} s (attempt {attempt + 1} of {retries + 1})')
        time.sleep(wait)


def download(url: str, dest, md5: str, *, retries: int = 4, backoff: float = 2.0, timeout: float = 60.0,
             progress: bool = True, log=print) -> str:
    """Make `dest` a verified copy of `url`: returns 'already present' or 'downloaded'.

    - `dest` exists with the right md5: nothing is downloaded. With a wrong md5 it is moved to `<dest>.bad` and
      downloaded again.
    - Bytes arrive in `<dest>.part`; a partial file left by an interrupted run is resumed (HTTP Range) or, when the
      server ignores ranges, restarted. Transient errors are retried; `dest` appears only by an atomic rename after
      the md5 matched.
    - A resumed download with a wrong md5 is restarted once from byte 0; a fresh one with a wrong md5 is moved to
      `<dest>.bad` and raises ChecksumError (it is never used).
    `url` may be http(s):// or file://."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, bad = dest.with_name(dest.name + '.part'), dest.with_name(dest.name + '.bad')
    if dest.is_file():
        got = md5sum(dest, progress)
        if got == md5:
            return 'already present'
        set_aside(dest, bad)
        log(f'  {dest} has md5 {got}, expected {md5}: moved it to {bad.name} (not used); downloading it again')
    for fresh in (False, True):
        if fresh:
            part.unlink(missing_ok=True)
        elif part.is_file():
            log(f'  resuming the partial download {part.name} ({part.stat().st_size:,} bytes)')
        resumed = _fetch_to_part(url, part, retries, backoff, timeout, progress, log)
        got = md5sum(part, progress)
        if got == md5:
            os.replace(part, dest)
            return 'downloaded'
        if resumed and not fresh:
            log(f'  md5 mismatch after resuming {part.name}: discarding it and downloading from the start')
            continue
        set_aside(part, bad)
        raise ChecksumError(
            f'{url} downloaded with md5 {got}, expected {md5}: the file is kept aside as {bad} and not used. '
            f'A mirror may serve a different file, or the download was damaged; re-run to download it again, or '
            f'place a correct copy at {dest} (its md5 is checked)')
    raise AssertionError('unreachable')


# ------------------------------------------------------------------------------------------------ extraction
def member_path(name: str, archive) -> PurePosixPath:
    """The relative path an archive member is extracted to; UnsafeArchiveError for names that could escape the
    destination (absolute, drive letter, backslash, '..' component, NUL). An empty path ('.', './') is the
    destination folder itself."""
    if (name.startswith('/') or '\\' in name or '\x00' in name or re.match(r'^[A-Za-z]:', name)
            or '..' in name.split('/')):
        raise UnsafeArchiveError(
            f'{archive}: member {name!r} would be written outside the destination folder (absolute path or '
            f'".." component); refusing to extract this archive. Is it the official file?')
    return PurePosixPath(*[p for p in name.split('/') if p not in ('', '.')])


@dataclass
class Member:
    "One archive member: its name, what it is ('file', 'dir' or 'other': links, devices) and how to read it."
    name: str
    kind: str
    size: int
    open: Callable


def _tar_members(tf: tarfile.TarFile) -> Iterator[Member]:
    for m in tf:
        kind = 'dir' if m.isdir() else 'file' if m.isfile() else 'other'
        yield Member(m.name, kind, m.size, lambda m=m: tf.extractfile(m))


def _zip_members(zf: zipfile.ZipFile) -> Iterator[Member]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        kind = 'dir' if info.is_dir() else 'other' if stat.S_ISLNK(mode) else 'file'
        yield Member(info.filename, kind, info.file_size, lambda info=info: zf.open(info))


def _open_archive(archive: Path):
    "(context manager, member iterator factory, number of members or None) of a .zip or tar(.gz/.bz2/.xz) file."
    try:
        if archive.suffix.lower() == '.zip':
            zf = zipfile.ZipFile(archive)
            return zf, lambda: _zip_members(zf), len(zf.infolist())
        tf = tarfile.open(archive, 'r:*')
        return tf, lambda: _tar_members(tf), None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise PrepareError(f'{archive} is not a readable archive ({type(e).__name__}: {e}): it is damaged or not '
                           f'the expected file; delete it and re-run') from None


def create_file(target, write: Callable[[Path], None]) -> Path:
    """Create `target` atomically: `write(tmp)` writes `.<name>.part` in the same folder, which is then renamed.

    Refuses (FileExistsError) when `target` exists: finished output is never replaced. A failed write leaves
    nothing behind."""
    target = Path(target)
    if target.exists():
        raise FileExistsError(f'{target} already exists: refusing to overwrite it')
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f'.{target.name}.part')
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _copy_stream(src) -> Callable[[Path], None]:
    def write(tmp: Path):
        with src as s, open(tmp, 'wb') as f:
            shutil.copyfileobj(s, f, CHUNK)
    return write


@dataclass
class ExtractStats:
    "What `extract` did: files written, files already there, members left out, and whether it was all done before."
    written: int = 0
    kept: int = 0
    filtered: int = 0
    other: int = 0
    done_before: bool = False

    def line(self) -> str:
        if self.done_before:
            return 'already extracted'
        extra = f', {self.other} links/special members skipped' if self.other else ''
        return f'{self.written:,} files written, {self.kept:,} already there{extra}'


def extract_marker(archive, dest) -> Path:
    "The file that records that `archive` was completely extracted into `dest`."
    return Path(dest) / f'.{Path(archive).name}.extracted'


def extract(archive, dest, *, keep: Callable[[str], bool] | None = None, progress: bool = True) -> ExtractStats:
    """Extract the regular files of a tar or zip `archive` into `dest`, safely and resumably.

    Every member name is checked first (`member_path`): an archive with a member that would land outside `dest` is
    refused. Links, devices and other special members are never created (counted in `other`). `keep(name)` selects
    the members to extract. A file that exists with the member's size is skipped (a previous, interrupted run
    wrote it through a temporary file, so it is complete); one with a different size is refused, never replaced.
    After a complete extraction a marker file `.<archive name>.extracted` in `dest` makes the next run skip it."""
    archive, dest = Path(archive), Path(dest)
    marker = extract_marker(archive, dest)
    if marker.is_file():
        return ExtractStats(done_before=True)
    dest.mkdir(parents=True, exist_ok=True)
    stats = ExtractStats()
    handle, members, total = _open_archive(archive)
    with handle, tqdm(total=total, unit='file', desc=f'extract {archive.name}', disable=not progress,
                      leave=False) as bar:
        try:
            for m in members():
                bar.update(1)
                rel = member_path(m.name, archive)
                if keep is not None and not keep(m.name):
                    stats.filtered += 1
                    continue
                target = dest.joinpath(*rel.parts)
                if m.kind == 'dir':
                    target.mkdir(parents=True, exist_ok=True)
                elif m.kind == 'other' or not rel.parts:
                    stats.other += 1
                elif target.exists():
                    if not target.is_file() or target.stat().st_size != m.size:
                        raise PrepareError(
                            f'{target} exists and differs from member {m.name} of {archive.name} '
                            f'({target.stat().st_size if target.is_file() else "not a file"} vs {m.size} bytes): '
                            f'refusing to overwrite it; move it away and re-run')
                    stats.kept += 1
                else:
                    create_file(target, _copy_stream(m.open()))
                    stats.written += 1
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise PrepareError(f'{archive} is damaged ({type(e).__name__}: {e}); delete it and re-run') from None
    if stats.written + stats.kept == 0:
        raise PrepareError(f'{archive}: no member to extract (of the ones this script needs): is it the right file?')
    marker.write_text(json.dumps({'archive': str(archive), 'files': stats.written + stats.kept}) + '\n')
    return stats


# ------------------------------------------------------------------------------------------------ reporting
def file_uri(path) -> str:
    "A file:// URL for a local path (for `--voc-url` etc. pointing at a local copy)."
    return Path(path).absolute().as_uri()


class Summary:
    "Rows of `step: outcome` printed at the end, followed by the next commands to run."
    def __init__(self, title: str):
        self.title, self.rows, self.warnings = title, [], []

    def add(self, step: str, outcome: str) -> None:
        self.rows.append((step, outcome))
        print(f'  -> {outcome}', flush=True)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f'  WARNING: {message}', flush=True)

    def print(self, next_commands=()) -> None:
        width = max((len(s) for s, _ in self.rows), default=0)
        print(f'\nsummary: {self.title}')
        for step, outcome in self.rows:
            print(f'  {step:<{width}}  {outcome}')
        for w in self.warnings:
            print(f'  WARNING: {w}')
        if next_commands:
            print('next:')
            for c in next_commands:
                print(f'  {c}')
        sys.stdout.flush()


def next_commands(dataset: str, root, partitions_root, lists_ok: bool) -> list[str]:
    "What to run after a prepare script: check the data, fetch the lists if they are not there yet, train."
    q = shlex.quote(str(root))
    cmds = [f'cps-repro data check --dataset {dataset} --root {q}']
    if not lists_ok: cmds.append(f'python data_scripts/fetch_partitions.py {shlex.quote(str(partitions_root))}')
    return cmds + [f'cps-repro train --preset {dataset}_cps_cutmix --split 1_8 --data-root {q}']


def step(n: int, total: int, what: str) -> None:
    "Print a step header `[n/total] what`."
    print(f'[{n}/{total}] {what}', flush=True)


def run(main_body: Callable[[], int], script: str) -> int:
    "Run `main_body()`, turning preparation errors into `error: ...` on stderr and exit code 1 (130 on Ctrl-C)."
    try:
        return main_body()
    except (PrepareError, FileExistsError) as e:
        print(f'{script}: error: {e}', file=sys.stderr)
        return 1
    except OSError as e:       # disk full, permission denied, ...: finished steps stay done
        print(f'{script}: error: {type(e).__name__}: {e}; fix the cause and re-run the same command to resume',
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'\n{script}: interrupted; re-run the same command to resume (finished steps are skipped)',
              file=sys.stderr)
        return 130
