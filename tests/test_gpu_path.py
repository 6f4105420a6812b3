"""The training path runs with the GPU machine's packages alone (issue 25): torch, torchvision, numpy, Pillow, tqdm and
TensorBoard (timm lazily, for HRNet). pandas, matplotlib, seaborn, papermill and scipy are hidden from a subprocess by
a meta-path finder (as if they were not installed: `import pandas` raises ModuleNotFoundError and
`importlib.util.find_spec('pandas')` is None), which then trains a mini preset at tiny size through `cps-repro`,
evaluates and predicts with it, and runs `gpu_check.sh --dry-run --stages preflight,e2e` (torchrun included).
Every hidden import attempt is logged with the file that made it; none may come from the package or benchmarks/.
The same check against the real package set (a venv of torch 2.11 + ...) is benchmarks/gpu_env_check.sh."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cps_repro.synthetic import synthesize

REPO = Path(__file__).resolve().parents[1]
HIDDEN = ('pandas', 'matplotlib', 'seaborn', 'papermill', 'scipy')

# sitecustomize.py of the subprocesses (children, torchrun's workers and gpu_check's stages inherit PYTHONPATH)
BLOCKER = r'''
import os, sys

HIDDEN = set(os.environ.get('CPS_HIDDEN_MODULES', '').split(',')) - {''}
LOG = os.environ.get('CPS_HIDDEN_LOG')

def _importer() -> str:
    f = sys._getframe(2)
    while f is not None and ('importlib' in f.f_code.co_filename or f.f_code.co_filename.startswith('<frozen')):
        f = f.f_back
    return f.f_code.co_filename if f is not None else '?'

class HideModules:
    "Wraps a meta-path finder: the hidden top-level packages (and their submodules) are not found, as if not installed."
    def __init__(self, finder, log: bool): self.finder, self.log = finder, log
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in HIDDEN:
            if LOG and self.log:                 # the first finder asked logs the attempt
                with open(LOG, 'a') as fh: fh.write(f"{name}\t{_importer()}\n")
            return None
        find = getattr(self.finder, 'find_spec', None)
        return find(name, path, target) if find else None
    def invalidate_caches(self):
        inv = getattr(self.finder, 'invalidate_caches', None)
        if inv: inv()

if HIDDEN:
    for m in list(sys.modules):
        if m.partition('.')[0] in HIDDEN: raise RuntimeError(f"{m} was imported before sitecustomize")
    sys.meta_path[:] = [HideModules(f, i == 0) for i, f in enumerate(sys.meta_path)]
'''


@pytest.fixture
def hidden_env(tmp_path):
    site = tmp_path / 'site'; site.mkdir()
    (site / 'sitecustomize.py').write_text(BLOCKER)
    log = tmp_path / 'hidden_imports.tsv'
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}      # IN_TEST: `python -m cps_repro.cli` would do nothing
    env.update(PYTHONPATH=f"{site}{os.pathsep}{REPO}", CPS_HIDDEN_MODULES=','.join(HIDDEN), CPS_HIDDEN_LOG=str(log),
               OMP_NUM_THREADS='1')
    return env, log


def _ours(log: Path) -> list:
    "Hidden-module import attempts made by the package or the benchmark scripts (third-party optional probes are fine)."
    if not log.exists(): return []
    rows = [l.split('\t') for l in log.read_text().splitlines() if l.strip()]
    return [r for r in rows if str(REPO / 'cps_repro') in r[1] or str(REPO / 'benchmarks') in r[1] or r[1] == '<string>']


def test_the_blocker_hides_the_modules(hidden_env):
    env, log = hidden_env
    code = ("import importlib.util\n"
            "assert all(importlib.util.find_spec(m) is None for m in %r)\n"
            "try: import pandas\n"
            "except ModuleNotFoundError as e: print('hidden', e.name)\n" % (HIDDEN,))
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'hidden pandas' in r.stdout, r.stderr
    assert [row[0] for row in _ours(log)] == list(HIDDEN) + ['pandas']   # attempts from '<string>' are logged as ours


@pytest.mark.slow
def test_train_eval_predict_without_the_table_packages(hidden_env, tmp_path):
    env, log = hidden_env
    syn = tmp_path / 'syn'
    synthesize(syn, n=16, n_val=2, size=32, progress=False)
    run = tmp_path / 'run'
    cli = [sys.executable, '-m', 'cps_repro.cli']
    r = subprocess.run([*cli, 'train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', str(syn), '--run-dir', str(run),
                        '--no-progress', '--device', 'cpu', '--set', 'iters=2', 'batch_size=2', 'eval_every=2',
                        'checkpoint_every=2', 'workers=0'], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / 'result.json').read_text())['iters'] == 2
    r = subprocess.run([*cli, 'eval', '--run', str(run), '--device', 'cpu', '--out', str(tmp_path / 'eval.json')],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'miou' in json.loads((tmp_path / 'eval.json').read_text())
    image = next((syn / 'VOCdevkit' / 'VOC2012' / 'JPEGImages').iterdir())
    r = subprocess.run([*cli, 'predict', '--run', str(run), '--out', str(tmp_path / 'pred'), '--device', 'cpu', '--no-progress',
                        str(image)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(tmp_path / 'pred' / f'{image.stem}.png').size == Image.open(image).size
    assert _ours(log) == []


@pytest.mark.slow
def test_gpu_check_dry_run_preflight_and_e2e_without_the_table_packages(hidden_env, tmp_path):
    env, log = hidden_env
    out = tmp_path / 'out'
    r = subprocess.run(['bash', str(REPO / 'benchmarks' / 'gpu_check.sh'), '--dry-run', '--stages', 'preflight,e2e', str(out)],
                       env={**env, 'PYTHON': sys.executable, 'TMPDIR': str(tmp_path)}, capture_output=True, text=True, timeout=660)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    import tarfile
    with tarfile.open(out / 'gpu_check.tar.gz') as t:
        t.extractall(tmp_path / 'unpacked', filter='data')
    pre = json.loads((tmp_path / 'unpacked' / 'preflight.json').read_text())
    assert pre['ok'] and pre['imported_cps_repro_cli'] and pre['missing'] == [] and pre['python'] and 'compile_ok' in pre
    e2e = json.loads((tmp_path / 'unpacked' / 'e2e.json').read_text())
    assert e2e['ok'] and e2e['finished'] and e2e['resumed_from'] is not None, e2e
    assert 'compile=false' in e2e['command']
    assert _ours(log) == []


def test_the_experiment_helpers_import_without_the_table_packages(hidden_env):
    "`run_experiment` (what the experiment notebooks train with) must import on the GPU machine's packages alone."
    env, log = hidden_env
    r = subprocess.run([sys.executable, '-c', 'from cps_repro.experiment import run_experiment, experiment_config, describe'],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _ours(log) == []
