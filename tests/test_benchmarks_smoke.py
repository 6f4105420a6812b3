"""Smoke run of the benchmark scripts in benchmarks/ at their smallest sizes, so that they keep running as the library
changes. Benchmarks are not part of the test suite otherwise, and no timing is ever asserted here: only that the
scripts run, write complete JSON, and that the lean step they recommend computes exactly what the library's does."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
BENCH = Path(__file__).resolve().parents[1] / 'benchmarks'
sys.path.insert(0, str(BENCH))


def test_bench_step_tiny_writes_cases_and_ratios(tmp_path):
    import bench_step
    out = tmp_path / 'step.json'
    rc = bench_step.main(['--tiny', '--device', 'cpu', '--variants', 'fp32,fp32+lean', '--methods', 'cps,cps_cutmix',
                          '--steps', '1', '--warmup', '0', '--json', str(out)])
    rep = json.loads(out.read_text())
    assert rc == 0 and rep['finished']
    names = {(c['variant'], c['case']) for c in rep['cases']}
    assert names == {(v, c) for v in ('fp32', 'fp32+lean') for c in ('cps', 'cps_cutmix', 'sup_ref', 'fwd_ref')}
    for c in rep['cases']:
        assert c['error'] is None and len(c['times_s']) == 1 and all(t > 0 for t in c['times_s'])
    r = rep['ratios']
    for key in ('cps_overhead', 'cutmix_overhead'):
        assert math.isfinite(r['fp32'][key]) and r['fp32'][key] > 0
    assert set(r['fp32+lean']['speedup_vs_fp32']) == {'cps', 'cps_cutmix', 'sup_ref', 'fwd_ref'}
    assert rep['machine']['torch'] == torch.__version__


def test_parse_variant_rejects_unknown_tokens():
    from bench_step import parse_variant
    v = parse_variant('bf16+cl+lean:infer+cudnn')
    assert (v.amp, v.channels_last, v.lean, v.cudnn_benchmark, v.compile) == ('bf16', True, ('infer',), True, False)
    with pytest.raises(ValueError, match='precision'): parse_variant('cl+bf16')
    with pytest.raises(ValueError, match='unknown token'): parse_variant('fp32+fast')
    with pytest.raises(ValueError, match='lean parts'): parse_variant('fp32+lean:turbo')


def test_lean_step_is_the_library_step():
    "The remaining proposal (inference_mode teacher passes) keeps the losses and the parameters bit for bit."
    from audit_syncs import check_pseudo_labels
    from lean import check_lean_equivalence
    assert check_pseudo_labels('cpu')
    assert check_lean_equivalence('cps_cutmix', steps=2) == {'max_loss_diff': 0.0, 'max_param_diff': 0.0}


def test_audit_finds_no_sync_in_the_lean_cutmix_step(tmp_path):
    import audit_syncs
    out = tmp_path / 'audit.json'
    assert audit_syncs.main(['--tiny', '--device', 'cpu', '--methods', 'cps_cutmix', '--variants', 'fp32+lean',
                             '--json', str(out)]) == 0
    (r,) = json.loads(out.read_text())['results']
    assert r['calls'] == []


def test_audit_recorder_flags_host_reads():
    from audit_syncs import SyncRecorder
    rec = SyncRecorder(torch.device('cpu'))
    with rec:
        t = torch.ones(3)
        t.sum().item(); bool(t.any()); t.nonzero()
    kinds = sorted(k for k, _ in rec.calls)
    assert kinds == ['data-dependent shape: nonzero', 'host read: __bool__', 'host read: item']


def test_data_and_eval_benchmarks_tiny(tmp_path):
    import bench_data, bench_eval
    assert bench_data.main(['--tiny', '--json', str(tmp_path / 'data.json')]) == 0
    d = json.loads((tmp_path / 'data.json').read_text())
    assert d['per_worker']['labeled']['img_s'] > 0 and d['loader'][0]['images'] > 0
    assert bench_eval.main(['--tiny', '--device', 'cpu', '--json', str(tmp_path / 'eval.json')]) == 0
    e = json.loads((tmp_path / 'eval.json').read_text())
    assert e['windows_per_image'] == 8 and e['img_s'] > 0


def test_eval_benchmark_compares_window_batches(tmp_path):
    import bench_eval
    assert bench_eval.main(['--tiny', '--device', 'cpu', '--window-batch', '1,4', '--json', str(tmp_path / 'e.json')]) == 0
    e = json.loads((tmp_path / 'e.json').read_text())
    assert [r['window_batch'] for r in e['runs']] == [1, 4] and e['runs'][1]['argmax_agreement_with_first'] == 1.0


def test_data_benchmark_times_the_old_and_new_pipelines(tmp_path):
    import bench_data
    assert bench_data.main(['--tiny', '--pipelines', 'new,old', '--json', str(tmp_path / 'd.json')]) == 0
    d = json.loads((tmp_path / 'd.json').read_text())
    assert set(d['by_pipeline']) == {'new', 'old'} and set(d['speedup_first_over_second']) == {'labeled', 'unlabeled'}


def test_flop_count_and_memory_estimate_tiny(tmp_path):
    import count_flops, estimate_memory
    assert count_flops.main(['--tiny', '--json', str(tmp_path / 'f.json')]) == 0
    f = json.loads((tmp_path / 'f.json').read_text())
    steps = {r['method']: r['step_tflop'] for r in f['steps']}
    assert steps['cps'] > steps['supervised'] > 0 and f['images'][0]['fwd_bwd_gflop'] > f['images'][0]['fwd_gflop']
    assert estimate_memory.main(['--tiny', '--batch', '4', '--methods', 'cps_cutmix', '--precisions', 'fp32', '--accum', '1,2',
                                 '--json', str(tmp_path / 'm.json')]) == 0
    rows = {(r['accum_steps'], r['order']): r for r in json.loads((tmp_path / 'm.json').read_text())['rows']}
    # per-term backward holds fewer graphs than one backward; two micro-batches halve the activations
    assert rows[(1, 'per-term')]['activations_gib'] < rows[(1, 'one')]['activations_gib']
    assert rows[(2, 'one')]['activations_gib'] < rows[(1, 'one')]['activations_gib']
    assert rows[(1, 'one')]['verdict'] == 'fits 80 GB, fits 141 GB'


# -- gpu_check.sh: its structure, cheaply (the full --dry-run takes minutes and is run by hand) ---------------------
GPU_CHECK = BENCH / 'gpu_check.sh'


def _bash(*args, env=None, timeout=120):
    import os, subprocess
    e = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', **(env or {}))
    return subprocess.run(['bash', str(GPU_CHECK), *args], capture_output=True, text=True, timeout=timeout, env=e)


def test_gpu_check_syntax_stages_and_no_install_step():
    import subprocess
    assert subprocess.run(['bash', '-n', str(GPU_CHECK)]).returncode == 0
    r = _bash('--list-stages')
    # most valuable figures first, compile last (it gets what is left, at least COMPILE_MIN_S)
    assert r.returncode == 0 and r.stdout.split() == ['preflight', 'step', 'eval', 'e2e', 'data', 'compile']
    text = GPU_CHECK.read_text()
    assert 'pip install' not in text and 'trap finish EXIT' in text
    for needle in ('voc_cps_cutmix_resnet101', 'pretrained=none', 'torch.distributed.run --standalone --nproc_per_node=1',
                   'fp32+strict,bf16+cl,bf16+cl+cudnn', 'bf16+cl+cudnn+compile', 'commit.txt', "--exclude='*.pt.tmp*'",
                   'TRITON_CACHE_DIR="$WORK/', 'TORCHINDUCTOR_CACHE_DIR="$WORK/', 'echo 470)}',
                   'ARCHIVE_MAX_MB=${ARCHIVE_MAX_MB:-50}', '[preflight]=60', 'import torch, torchvision, cps_repro, cps_repro.cli'):
        assert needle in text, needle
    e2e = [l for l in text.splitlines() if l.startswith('  E2E=(')]
    assert len(e2e) == 2 and all('compile=false' in l for l in e2e)   # the e2e stage never compiles (compile is last)
    assert _bash('--stages', 'nope').returncode == 2


def test_gpu_check_dry_run_preflight_leaves_commit_summary_and_archive(tmp_path):
    import tarfile
    out = tmp_path / 'out'
    r = _bash('--dry-run', '--stages', 'preflight', str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for f in ('commit.txt', 'summary.md', 'summary.json', 'stages.log', 'gpu_check.tar.gz'):
        assert (out / f).is_file(), f
    assert 'source sha256' in (out / 'commit.txt').read_text() and 'preflight rc=0' in (out / 'stages.log').read_text()
    with tarfile.open(out / 'gpu_check.tar.gz') as t:
        names = {Path(n).name for n in t.getnames()}
    assert {'preflight.json', 'preflight.log', 'commit.txt'} <= names
    assert 'Preflight: ok' in (out / 'summary.md').read_text()


def test_mini_input_times_both_settings_on_generated_data(tmp_path):
    import mini_input
    out = tmp_path / 'mini_input.json'
    assert mini_input.main(['--n-images', '32', '--n-val', '8', '--iters', '2', '--evals', '1', '--out', str(out)]) == 0
    rep = json.loads(out.read_text())
    assert [r['setting'] for r in rep['rows']] == list(mini_input.SETTINGS)
    assert all(r['wall_s'] > 0 and math.isfinite(r['miou']) for r in rep['rows'])
    assert rep['rows'][0]['miou'] == pytest.approx(rep['rows'][1]['miou'], abs=0.05)   # the same predictions, up to rounding


# -- a stage killed at any point leaves its partial JSON ----------------------------------------------------------
def _kill_when(cmd, path, ready, timeout=240, sig=None, **kw):
    "Start `cmd`; once the JSON at `path` (or returned by `path()`) satisfies `ready`, kill it (SIGKILL, or `sig`); its exit code."
    import os, signal, subprocess, time
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
    deadline, rep = time.time() + timeout, None
    try:
        while time.time() < deadline and p.poll() is None:
            if callable(path): rep = path()
            else:
                try: rep = json.loads(Path(path).read_text())
                except (OSError, ValueError): rep = None
            if rep is not None and ready(rep): break
            time.sleep(0.05)
        assert p.poll() is None, f"{cmd[:3]} ended before it could be killed"
    finally:
        if p.poll() is None:   # SIGKILL: the whole process group; a signal to trap (gpu_check.sh's TERM): the script only
            os.killpg(p.pid, signal.SIGKILL) if sig is None else os.kill(p.pid, sig)
        p.wait(timeout=60)
    return p.returncode


@pytest.mark.slow
def test_bench_scripts_killed_midway_leave_partial_json(tmp_path):
    import os
    py = [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cases = [  # (command, json, ready): each would run for many minutes; killed after its first measurement
        ([str(BENCH / 'bench_step.py'), '--tiny', '--device', 'cpu', '--variants', 'fp32', '--methods', 'cps', '--no-refs',
          '--steps', '100000', '--warmup', '1'], 'step.json', lambda r: r['cases'][0]['times_s']),
        # the compiled variant: written before its first warm-up step, which compiles
        ([str(BENCH / 'bench_step.py'), '--tiny', '--device', 'cpu', '--variants', 'fp32+compile', '--methods', 'cps',
          '--no-refs', '--steps', '1', '--warmup', '3'], 'step_compile.json', lambda r: 'compiling' in (r.get('now') or '')),
        ([str(BENCH / 'bench_eval.py'), '--tiny', '--device', 'cpu', '--images', '100000'], 'eval.json', lambda r: r['runs']),
        ([str(BENCH / 'bench_data.py'), '--tiny', '--seconds', '600'], 'data.json', lambda r: 'jpeg_kib' in r),
    ]
    for cmd, name, ready in cases:
        out = tmp_path / name
        _kill_when(py + cmd + ['--json', str(out)], out, ready, env=env)
        rep = json.loads(out.read_text())
        assert rep['finished'] is False and rep['now'] and ready(rep), (name, rep.get('now'))


@pytest.mark.slow
@pytest.mark.parametrize('stage,name', [('preflight', 'preflight.json'), ('e2e', 'e2e.json')])
def test_gpu_check_terminated_in_a_stage_returns_its_partial_json(tmp_path, stage, name):
    "TERM to gpu_check.sh while a stage runs: the archive holds that stage's JSON as it was (finished false)."
    import os, signal, tarfile
    out, work = tmp_path / 'out', tmp_path / 'tmp'
    work.mkdir()
    def current():
        for f in work.glob(f'gpu_check_work.*/{name}'):
            try: return json.loads(f.read_text())
            except ValueError: return None
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', TMPDIR=str(work))
    rc = _kill_when(['bash', str(GPU_CHECK), '--dry-run', '--stages', f'preflight,{stage}', str(out)], current,
                    lambda r: r.get('finished') is False, sig=signal.SIGTERM, env=env)
    assert rc == 143
    with tarfile.open(out / 'gpu_check.tar.gz') as t:
        rep = json.load(t.extractfile(f'./{name}'))
    assert rep['finished'] is False and rep['now'], rep
    assert 'exit rc=143' in (out / 'stages.log').read_text()


def test_gpu_check_archive_over_its_cap_keeps_json_and_text_only(tmp_path):
    "Above ARCHIVE_MAX_MB (50 on the GPU machine; 0 here) the archive is rebuilt from JSON, Markdown and text alone."
    import tarfile
    out = tmp_path / 'out'
    r = _bash('--dry-run', '--stages', 'preflight', str(out), env={'ARCHIVE_MAX_MB': '0'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with tarfile.open(out / 'gpu_check.tar.gz') as t:
        names = {Path(n).name for n in t.getnames()}
    assert {'preflight.json', 'commit.txt', 'stages.log'} <= names and 'preflight.log' not in names
    assert 'archive over 0 MB' in (out / 'stages.log').read_text()
