"""Execute the book's notebooks with a real kernel and commit them with their outputs; `--check` proves they are current.

    python tools/execute_chapters.py                 # execute every chapter in place (all nbs/*.ipynb except exp_*)
    python tools/execute_chapters.py nbs/05_losses.ipynb nbs/06_cutmix.ipynb
    python tools/execute_chapters.py --check         # exit 1 unless every chapter has outputs matching a fresh run

Execution is deterministic: a hidden first cell seeds `random`, NumPy and PyTorch, fixes the figure format (PNG at
`DPI` dots per inch) and the kernel runs with PYTHONHASHSEED=0, one thread, `TQDM_DISABLE=1` (no progress bars) and
IN_TEST=1 (as under nbdev-test). Cells flagged with nbdev's test flags (`#| slow`, `#| cuda`, `#| notest`, see
`tst_flags` in pyproject.toml) or `#| eval: false` are not executed and keep no outputs, exactly the cells nbdev-test
skips. Outputs are made stable before they are written: progress-bar text and widgets are dropped, the repository's
absolute path becomes relative, a temporary folder (its random name) becomes `<tmp>` with the path inside it kept, memory
addresses are removed; then the notebook goes through nbdev-clean (which keeps outputs), so the sync check
`make check-sync` leaves it unchanged.

`--check` executes each notebook into memory and compares it with the committed file cell by cell: text outputs must
be equal once durations (`1.2 s`, `350 ms`, `0:00:03`, `'seconds': 6.4`, `wall_seconds=3`) are masked; PNG figures must have the same size and differ by at
most `--image-tolerance` in mean absolute value (0-255 scale). A notebook without any output fails the check.
The papermill notebooks paper_tables and paper_figures run on the committed mini results (`PARAMETERS` below), with an
`injected-parameters` cell after their `parameters` cell that says so, as papermill would.
"""
from __future__ import annotations

import argparse, base64, copy, io, json, os, re, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
DPI = 72
TIMEOUT = 900                       # seconds per cell, as [tool.nbdev] cell_timeout
LARGE_KIB = 600                     # a notebook above this size gets a note (figures too large)
SKIP_PREFIXES = ('exp_',)           # papermill templates stay unexecuted
class Code(str):
    "A parameter value written as Python code rather than as a literal."
    def __repr__(self): return str(self)

_TMP_OUT = Code("__import__('tempfile').mkdtemp(prefix='reports_')")     # written tables/figures go to a scratch folder
PARAMETERS = {                      # values injected after the `parameters` cell (paths relative to nbs/)
    'paper_tables.ipynb': {'results_dir': 'nbs/mini_results', 'out_dir': _TMP_OUT},
    'paper_figures.ipynb': {'results_dir': 'nbs/mini_results', 'out_dir': _TMP_OUT},
}
PRELUDE = f"""\
import random as _r, numpy as _np
_r.seed(0); _np.random.seed(0)
try:
    import torch as _t
    _t.manual_seed(0); _t.set_num_threads(1)
except ImportError: pass
%config InlineBackend.figure_formats = ['png']
%config InlineBackend.rc = {{'figure.dpi': {DPI}, 'savefig.dpi': {DPI}, 'font.size': 10}}
"""
DIRECTIVE = re.compile(r'^\s*#\|\s*(.*?)\s*$')
DURATION = re.compile(r'\b\d+(?:[.,]\d+)?\s?(?:ms|µs|us|ns|s|sec|secs|seconds?|min|minutes?|h|hours?)\b|\b\d+:\d\d(?::\d\d)?\b')
TIMING_FIELD = re.compile(r'''((?:['"]|\b)(?:\w*seconds|\w*_secs?|elapsed|wall_time|runtime)['"]?\s*[:=]\s*)\d+(?:\.\d+)?''')
ADDRESS = re.compile(r' at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{8,}')
PROGRESS = re.compile(r'\r|\d+%\|')


def default_notebooks() -> list[Path]:
    "Every notebook of nbs/ except the papermill templates (exp_*), sorted by name."
    return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(SKIP_PREFIXES) and not p.name.endswith('.out.ipynb'))


def test_flags() -> tuple[str, ...]:
    "nbdev's `tst_flags` from pyproject.toml (the cell flags nbdev-test skips)."
    import tomllib
    cfg = tomllib.loads((ROOT / 'pyproject.toml').read_text()).get('tool', {}).get('nbdev', {})
    return tuple(str(cfg.get('tst_flags', 'notest')).split())


def _text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


def skipped(cell, flags) -> bool:
    "Whether nbdev-test would skip this code cell: a test flag (`#| slow`) or `#| eval: false`."
    for line in _text(cell['source']).splitlines():
        m = DIRECTIVE.match(line)
        if not m: continue
        words = m.group(1).replace(':', ' ').split()
        if any(w in flags for w in words): return True
        if words[:2] == ['eval', 'false']: return True
    return False


def _param_cell(nb, values):
    import nbformat
    src = '# Parameters (injected by tools/execute_chapters.py)\n' + '\n'.join(f'{k} = {v!r}' for k, v in values.items())
    cell = nbformat.v4.new_code_cell(src, metadata={'tags': ['injected-parameters']})
    cell['id'] = 'injected-parameters'
    return cell


def inject_parameters(nb, name: str) -> None:
    "Replace/insert the `injected-parameters` cell after the `parameters` cell for notebooks in PARAMETERS."
    nb.cells = [c for c in nb.cells if 'injected-parameters' not in c.get('metadata', {}).get('tags', [])]
    if name not in PARAMETERS: return
    at = next((i for i, c in enumerate(nb.cells) if 'parameters' in c.get('metadata', {}).get('tags', [])), None)
    if at is None: raise ValueError(f"{name}: PARAMETERS has values for it but it has no cell tagged `parameters`")
    nb.cells.insert(at + 1, _param_cell(nb, PARAMETERS[name]))


def _sanitize_text(s: str, tmp_roots) -> str:
    s = s.replace(str(NBS) + os.sep, '').replace(str(NBS), '.').replace(str(ROOT) + os.sep, '').replace(str(ROOT), '.')
    # a temporary folder (its random name) becomes `<tmp>`; the path inside it stays, and so does the punctuation after it
    for t in tmp_roots: s = re.sub(re.escape(t) + r'(?:/[^/\s\'"`,;)\]}:]*[^/\s\'"`,;)\]}:.])?', '<tmp>', s)
    return ADDRESS.sub('', s)


def stabilize(cell, tmp_roots) -> None:
    "Make a cell's outputs deterministic in place (see the module docstring)."
    outs = []
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream':
            text = _text(o.get('text'))
            if o.get('name') == 'stderr' and PROGRESS.search(text): continue
            o['text'] = _sanitize_text(text, tmp_roots)
        elif o.get('output_type') == 'error':
            o['traceback'] = [_sanitize_text(t, tmp_roots) for t in o.get('traceback', [])]
            o['evalue'] = _sanitize_text(o.get('evalue', ''), tmp_roots)
        elif 'data' in o:
            data = o['data']
            for k in [k for k in data if 'widget' in k]: del data[k]
            if not data: continue
            for k in list(data):
                if k.startswith('text/') or k in ('application/javascript',):
                    data[k] = _sanitize_text(_text(data[k]), tmp_roots)
            o['metadata'] = {}
        outs.append(o)
    # consecutive stream outputs of the same name become one (their split depends on buffering); blank streams go
    # after that (a print's newline may arrive as a chunk of its own and must stay with its text), then merge again
    blank = lambda o: o.get('output_type') == 'stream' and not _text(o['text']).strip()
    cell['outputs'] = _merge_streams([o for o in _merge_streams(outs) if not blank(o)])


def _merge_streams(outs: list) -> list:
    merged = []
    for o in outs:
        if merged and o.get('output_type') == 'stream' and merged[-1].get('output_type') == 'stream' and merged[-1]['name'] == o['name']:
            merged[-1]['text'] = _text(merged[-1]['text']) + _text(o['text'])
        else: merged.append(o)
    return merged


def execute(path: Path, timeout: int = TIMEOUT):
    "The notebook at `path` executed in a fresh kernel (cwd nbs/), with stable outputs; not written."
    import nbformat
    from nbclient import NotebookClient
    flags = test_flags()
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, path.name)
    run = copy.deepcopy(nb)
    keep = [i for i, c in enumerate(run.cells) if c.cell_type == 'code' and not skipped(c, flags)]
    prelude = nbformat.v4.new_code_cell(PRELUDE); prelude['id'] = 'prelude'
    run.cells = [prelude] + [run.cells[i] for i in keep]
    env = {**os.environ, 'PYTHONHASHSEED': '0', 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'TQDM_DISABLE': '1',
           'IN_TEST': '1', 'MPLBACKEND': 'module://matplotlib_inline.backend_inline',
           'PYTHONPATH': os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])}
    client = NotebookClient(run, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                            allow_errors=False, record_timing=False)
    _run_with_env(client, env)
    tmp_roots = [tempfile.gettempdir()]
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    for i, c in zip(keep, run.cells[1:]):
        nb.cells[i].outputs = c.outputs
        stabilize(nb.cells[i], tmp_roots)
    return nb


def _run_with_env(client, env):
    "nbclient passes `env` to the kernel only through the kernel manager's start arguments."
    client.km = client.create_kernel_manager()
    with client.setup_kernel(env=env):
        client.reset_execution_trackers()
        for index, cell in enumerate(client.nb.cells):
            client.execute_cell(cell, index)
    client.set_widgets_metadata()


def clean(path: Path) -> None:
    "nbdev-clean the written notebook (outputs kept), with the project's settings."
    from nbdev.clean import nbdev_clean
    cwd = os.getcwd()
    try: os.chdir(ROOT); nbdev_clean.__wrapped__(fname=str(path))
    finally: os.chdir(cwd)


def write(nb, path: Path) -> None:
    import nbformat
    nbformat.write(nb, path)
    clean(path)


# ---------------------------------------------------------------- check

def _png(data: str):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert('RGB'), dtype=np.float64)


def _mask(text: str) -> str:
    "Text with durations masked: `3.2 s`, `0:01:05`, and values of fields named like `seconds` / `elapsed`."
    return DURATION.sub('<t>', TIMING_FIELD.sub(r'\1<t>', text))


def _where(a: str, b: str, context: int = 150) -> str:
    "Where texts `a` (committed) and `b` (fresh) first differ, with `context` characters either side, and their lengths."
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    lo = max(i - context, 0)
    return (f"at character {i} (lengths {len(a)} and {len(b)}):\n    committed: {a[lo:i + context]!r}\n"
            f"    fresh:     {b[lo:i + context]!r}")


def _compare_output(a, b, tol) -> str | None:
    if a.get('output_type') != b.get('output_type'): return f"output type {a.get('output_type')} != {b.get('output_type')}"
    if a.get('output_type') == 'stream':
        if a.get('name') != b.get('name'): return f"stream {a.get('name')} != {b.get('name')}"
        # blank lines at either end of a stream depend on how the kernel's writes were buffered (a closed progress
        # bar's newline, in 03_synthetic's CLI cell), not on the code
        ta, tb = _mask(_text(a['text'])).strip('\n'), _mask(_text(b['text'])).strip('\n')
        return None if ta == tb else f"{a['name']} text differs {_where(ta, tb)}"
    if a.get('output_type') == 'error': return f"error {a.get('ename')}"
    da, db = a.get('data', {}), b.get('data', {})
    if set(da) != set(db): return f"output formats {sorted(da)} != {sorted(db)}"
    for k in da:
        if k == 'image/png':
            ia, ib = _png(_text(da[k])), _png(_text(db[k]))
            if ia.shape != ib.shape: return f"figure size {ia.shape[1]}x{ia.shape[0]} != {ib.shape[1]}x{ib.shape[0]}"
            diff = float(abs(ia - ib).mean())
            if diff > tol: return f"figure differs: mean absolute difference {diff:.2f} > {tol}"
        elif k.startswith('image/'):
            continue                         # svg/jpeg: not produced by the prelude's settings; compared by presence
        elif k.startswith('text/') or k == 'application/javascript':
            ta, tb = _mask(_text(da[k])), _mask(_text(db[k]))
            if ta != tb: return f"{k} differs {_where(ta, tb)}"
        elif da[k] != db[k]: return f"{k} differs"
    return None


def compare(committed, fresh, tol: float) -> list[str]:
    "Differences between the committed notebook and a fresh execution, one line per problem (empty: they match)."
    problems = []
    if not any(c.get('outputs') for c in committed.cells if c.cell_type == 'code'):
        return ["has no outputs: execute it with `python tools/execute_chapters.py NOTEBOOK` and commit it"]
    ca = [c for c in committed.cells if c.cell_type == 'code']
    cb = [c for c in fresh.cells if c.cell_type == 'code']
    if [c.source for c in ca] != [c.source for c in cb]: return ["code cells differ from the ones executed (internal error)"]
    for a, b in zip(ca, cb):
        oa, ob = a.get('outputs', []), b.get('outputs', [])
        where = f"cell {a.get('id')}"
        if len(oa) != len(ob):
            problems.append(f"{where}: {len(oa)} committed outputs, {len(ob)} in a fresh run"); continue
        for x, y in zip(oa, ob):
            p = _compare_output(x, y, tol)
            if p: problems.append(f"{where}: {p}"); break
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('notebooks', nargs='*', type=Path, help='notebooks (default: every nbs/*.ipynb except exp_*)')
    ap.add_argument('--check', action='store_true', help='execute into memory and compare with the committed files')
    ap.add_argument('--image-tolerance', type=float, default=2.0, help='largest mean absolute pixel difference (0-255)')
    ap.add_argument('--out-dir', type=Path, help='write executed copies here instead of in place')
    ap.add_argument('--timeout', type=int, default=TIMEOUT, help='seconds per cell')
    a = ap.parse_args(argv)
    paths = [p.resolve() for p in a.notebooks] or default_notebooks()
    missing = [p for p in paths if not p.is_file()]
    if missing: ap.error(f"no such notebook: {', '.join(map(str, missing))}")
    failed, t_all = [], time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        try: fresh = execute(path, a.timeout)
        except Exception as e:
            msg = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines()
            failed.append(path.name)
            print(f"FAIL {path.name}: execution failed: {type(e).__name__}: {' | '.join(msg[-6:])[:1500]}", flush=True)
            continue
        dt = time.perf_counter() - t0
        if a.check:
            import nbformat
            problems = compare(nbformat.read(path, as_version=4), _cleaned(fresh), a.image_tolerance)
            if problems:
                failed.append(path.name)
                print(f"FAIL {path.name} ({dt:.0f} s): committed outputs are not those of a fresh run; re-run "
                      f"`python tools/execute_chapters.py {path.relative_to(ROOT)}` and commit.", flush=True)
                for p in problems[:10]: print(f"  {p}")
            else: print(f"ok   {path.name} ({dt:.0f} s)", flush=True)
        else:
            out = (a.out_dir / path.name) if a.out_dir else path
            if a.out_dir: a.out_dir.mkdir(parents=True, exist_ok=True)
            write(fresh, out)
            kib = out.stat().st_size / 1024
            big = f"; over {LARGE_KIB} KiB: smaller figures (figsize) would keep the repository small" if kib > LARGE_KIB else ''
            print(f"wrote {out} ({dt:.0f} s, {kib:.0f} KiB{big})", flush=True)
    total = time.perf_counter() - t_all
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks {'match' if a.check else 'executed'} in {total:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ''))
    return 1 if failed else 0


def _cleaned(nb):
    "`nb` as nbdev-clean would write it (to compare like with like)."
    import nbformat
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / 'nb.ipynb'
        write(nb, p)
        return nbformat.read(p, as_version=4)


if __name__ == '__main__':
    sys.exit(main())
