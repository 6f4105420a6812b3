#!/usr/bin/env python
"""Headline figures of a results folder written by gpu_check.sh (or by the scripts with the same file names), checked
against the issue's targets, as Markdown (printed and written to `summary.md`) and JSON (`summary.json`).

Files read when present: commit.txt, preflight.json, step.json, step_compile.json (bench_step.py), flops.json
(count_flops.py: MFU = counted FLOPs / step time / peak), estimate.json (estimate_memory.py), memory_*.json
(bench_step.py --memory-only), audit.json (audit_syncs.py), data.json (bench_data.py), eval*.json (bench_eval.py),
e2e.json (gpu_check.sh's end-to-end torchrun stage), mini.json (mini_e2e.py). A missing or partial file leaves its
section out: the summary of a run killed midway shows what the finished stages measured.

    python benchmarks/summarize.py benchmarks/results/gpu_check_<date>
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonio import write_json

GIB = 2**30
CUTMIX_IMAGES = 3   # per B: B labeled + B + B unlabeled images per CPS+CutMix step


def _load(path: Path):
    try: return json.loads(path.read_text())
    except (OSError, ValueError): return None

def _median(rep: dict, variant: str, case: str):
    for c in rep.get('cases', []):
        if c['variant'] == variant and c['case'] == case and c.get('stats') and not c.get('error'):
            return c['stats']['median']
    return None

def _fmt(x, f='{:.2f}'): return '—' if x is None else f.format(x)

def summarize(folder: Path) -> tuple[str, dict]:
    step, comp = _load(folder / 'step.json'), _load(folder / 'step_compile.json')
    lines, s = [], {}
    m = next((r['machine'] for r in (step, comp, _load(folder / 'eval.json'), _load(folder / 'data.json'), _load(folder / 'flops.json'))
              if r and r.get('machine')), {})
    lines += [f"# GPU check, {m.get('date', '?')}", '',
              f"Device: {m.get('gpu', m.get('device', '?'))} ({m.get('gpu_memory_gib', '?')} GiB); torch {m.get('torch', '?')}, "
              f"CUDA {m.get('cuda', '?')}, cuDNN {m.get('cudnn', '?')}; CPU {m.get('cpu', '?')} x{m.get('cpu_count', '?')}; "
              f"git {m.get('git_commit', '?')}{' (dirty)' if m.get('git_dirty') else ''}.", '']
    commit = folder / 'commit.txt'
    if commit.exists(): lines += ['```', commit.read_text().strip(), '```', '']
    pre = _load(folder / 'preflight.json')
    if pre: lines += [f"Preflight: {'ok' if pre.get('ok') else 'FAILED' if pre.get('error') else 'unfinished'} in "
                      f"{pre.get('seconds', 0):.1f} s; {pre.get('versions', '')}; tiny step loss {pre.get('loss')}; "
                      f"missing modules: {pre.get('missing') or 'none'}" + (f"; error: {pre['error']}" if pre.get('error') else ''), '',
                      f"Toolchain: python {pre.get('python', '?')}; compiler {pre.get('compiler') or 'none'}; Python.h "
                      f"{'found' if pre.get('python_h') else 'MISSING'}; triton {pre.get('triton') or 'none'}; "
                      f"free disk {_fmt(pre.get('free_disk_gib'), '{:.1f}')} GiB; compile possible: {pre.get('compile_ok')}"
                      + (f" ({pre['compile_skip_reason']})" if pre.get('compile_skip_reason') else ''), '']
    partial = [f"{f.name} ({r.get('now') or 'unfinished'})" for f in sorted(folder.glob('*.json'))
               for r in [_load(f)] if isinstance(r, dict) and r.get('finished') is False]
    if partial: lines += ['Partial (the stage was stopped; last step in flight): ' + '; '.join(partial), '']
    if comp and comp.get('skipped'):
        lines += [f"Compile stage skipped: {comp['skipped']}", '']
        comp = None
    flops = _load(folder / 'flops.json')
    if step:
        st = step['settings']
        lines += [f"## Training step: {st['backbone']}, crop {st['crop']}, batch {st['batch_l']}+{st['batch_u']}(+{st['batch_u']}), "
                  f"{st['steps']} timed steps (interleaved) after {st['warmup']} warm-up, {st.get('clock', 'wall')} clock", '',
                  f"| variant | case | median ms | IQR | img/s | x {st['baseline']} | peak GiB (CUDA: case alone, est.; CPU: process RSS) | error |",
                  '|---|---|---|---|---|---|---|---|']
        for r in step['rows']:
            lines.append(f"| {r['variant']} | {r['case']} | {_fmt(r.get('t_median') and r['t_median'] * 1000, '{:.0f}')} | "
                         f"{_fmt(r.get('t_iqr_rel'), '{:.0%}')} | {_fmt(r.get('img_s'), '{:.1f}')} | {_fmt(r.get('speedup'))} | "
                         f"{_fmt(r.get('mem_alone_mib') and r['mem_alone_mib'] / 1024, '{:.1f}')} | {r.get('error') or ''} |")
        lines.append('')
        s['ratios'] = step['ratios']
        for v, r in step['ratios'].items():
            if 'cps_overhead' in r:
                lines.append(f"- [{v}] CPS overhead {r['cps_overhead']:.3f} (per-repetition median {r['cps_overhead_per_rep']['median']:.3f}); "
                             f"CutMix overhead {_fmt(r.get('cutmix_overhead'), '{:.3f}')} (teacher passes {_fmt(r.get('cutmix_teacher_share'), '{:.0%}')} of the step)")
        lines.append('')
    # speed-up target: CPS+CutMix, bf16 + channels_last (+ compile) over fp32 eager, same run
    targets = []
    for rep, name in ((step, 'step.json'), (comp, 'step_compile.json')):
        if not rep: continue
        base, ref = rep['settings']['baseline'], rep
        if rep is comp and step and len(comp['settings']['variants']) == 1:   # the one compiled variant: against step.json's baseline
            base, ref = step['settings']['baseline'], step
        for v in rep['settings']['variants']:
            if v == base and ref is rep: continue
            b, t = _median(ref, base, 'cps_cutmix'), _median(rep, v, 'cps_cutmix')
            if b and t: targets.append((f"speed-up of {v} over {base}, CPS+CutMix ({name})", b / t, '>= 2.5', b / t >= 2.5))
    # MFU against counted FLOPs (count_flops.py), for the CPS+CutMix step of every variant
    if flops:
        per = {r['method']: r['step_tflop'] for r in flops.get('steps', [])}
        peaks = flops.get('peak_tflops', {})
        mfu_lines = []
        for rep in (step, comp):
            if not rep or 'cps_cutmix' not in per: continue
            rs = rep['settings']
            if (rs['backbone'], rs['crop'], rs['batch_l']) != (flops['settings']['step_backbone'], flops['settings']['crop'], flops['settings']['batch']):
                continue
            for v in rs['variants']:
                t = _median(rep, v, 'cps_cutmix')
                if not t: continue
                peak = peaks.get('h200_bf16', 989.0) if v.startswith(('bf16', 'fp16')) else peaks.get('h200_fp32', 67.0)
                mfu = per['cps_cutmix'] / t / peak
                s.setdefault('mfu', {})[v] = mfu
                mfu_lines.append(f"- {v}: {per['cps_cutmix']:.3g} TFLOP per CPS+CutMix step in {t * 1000:.0f} ms = "
                                 f"{per['cps_cutmix'] / t:.0f} TFLOP/s, MFU {mfu:.1%} of {peak:.0f} TFLOP/s; "
                                 f"{CUTMIX_IMAGES * rs['batch_l'] / t:.0f} img/s")
        if mfu_lines: lines += ['## MFU (counted FLOPs, H200 dense peak)', ''] + mfu_lines + ['']
    est = _load(folder / 'estimate.json')
    if est:
        lines += ['## Estimated peak memory per process (estimate_memory.py)', '',
                  '| method | batch | precision | accum | backward | plan GiB | verdict |', '|---|---|---|---|---|---|---|']
        for r in est['rows']:
            lines.append(f"| {r['method']} | {r['batch']} | {r['precision']} | {r['accum_steps']} | {r['order']} | {r['plan_gib']:.1f} | {r['verdict']} |")
        lines.append('')
    e2e = _load(folder / 'e2e.json')
    if e2e:
        lines += ['## End to end under torchrun (synthetic VOC layout, 500 px)', '',
                  f"- {e2e.get('command', '')}", f"- ok: {e2e.get('ok')}; " + '; '.join(f"{k}: {v}" for k, v in e2e.items()
                                                                                   if k not in ('command', 'ok')), '']
        s['e2e'] = e2e
    compile_first = None
    if comp:
        for c in comp['cases']:
            if 'compile' in c['variant'] and c.get('warmup_s'): compile_first = (c['case'], c['warmup_s'][0])
    # memory: each case alone
    for f in sorted(folder.glob('memory_*.json')):
        r = _load(f)
        if r and r.get('oom'):
            targets.append((f"{r['case']} {r['variant']} alone, batch {r['settings']['batch_l']}+{r['settings']['batch_u']}: "
                            f"OUT OF MEMORY ({r['error'][:120]})", r['cuda_max_allocated'] / GIB, '< 80 GB = 74.5 GiB', False))
        elif r and 'cuda_max_allocated' in r:
            gib = r['cuda_max_allocated'] / GIB
            targets.append((f"peak memory of {r['case']} {r['variant']} alone, batch {r['settings']['batch_l']}+{r['settings']['batch_u']}"
                            f" (max allocated; reserved {r['cuda_max_reserved'] / GIB:.1f} GiB)", gib, '< 80 GB = 74.5 GiB', gib < 74.5))
    # loader vs consumption
    data = _load(folder / 'data.json')
    if data and 'per_worker' in data:
        pw = data['per_worker']
        lines += ['## Data pipeline (VOC train transform, crop 512, generated 500x375 JPEGs)', '',
                  f"- one worker: {pw['labeled']['img_s']:.1f} img/s labeled (decode {pw['labeled']['decode_ms']['median']:.1f} ms + "
                  f"augment {pw['labeled']['augment_ms']['median']:.1f} ms), {pw['unlabeled']['img_s']:.1f} img/s unlabeled"]
        for r in data['loader']:
            lines.append(f"- InfiniteStream with {r['workers']} worker(s): {r['img_s']:.1f} img/s ({r['efficiency']:.0%} of workers x one worker)")
        lines.append('')
        eight = next((r for r in data['loader'] if r['workers'] == 8), None)
        if eight and step:
            best = [(v, _median(step, v, 'cps_cutmix')) for v in step['settings']['variants']]
            best = [(v, t) for v, t in best if t]
            if best:
                v, t = min(best, key=lambda x: x[1])
                need = CUTMIX_IMAGES * step['settings']['batch_l'] / t
                targets.append((f"loader with 8 workers / images the fastest CPS+CutMix step consumes ({v}: {need:.0f} img/s)",
                                eight['img_s'] / need, '>= 2', eight['img_s'] / need >= 2))
    for f in sorted(folder.glob('eval*.json')):
        e = _load(f)
        if e and 'img_s' in e:
            st = e['settings']
            lines.append(f"- evaluation ({f.name}): {st['mode']}, {st['backbone']}, {st['image']} images, crop {st['crop']} "
                         f"({e['windows_per_image']} windows), {st['precision']}{' channels_last' if st['channels_last'] else ''}: "
                         f"{e['img_s']:.2f} img/s ({e['ms_per_window']:.1f} ms per window)")
    audit = _load(folder / 'audit.json')
    if audit:
        lines += ['', '## Host-device synchronisations inside one step', '']
        for r in audit['results']:
            n = sum(c['count'] for c in r['calls'])
            w = sum(r.get('cuda_sync_warnings', {}).values()) if 'cuda_sync_warnings' in r else None
            where = '; '.join(f"{c['count']}x {c['kind']} at {c['where']}" for c in r['calls'])
            lines.append(f"- {r['variant']} {r['method']}: {n} recorded{'' if w is None else f', {w} CUDA sync warnings'}"
                         f"{': ' + where if where else ''}")
        s['audit'] = audit['results']
    mini = _load(folder / 'mini.json')
    if mini:
        lines += ['', '## Mini preset end to end', '']
        for r in mini['runs']:
            lines.append(f"- {r['method']} {r['variant']}, {r['iters']} iterations: mIoU {r['miou']:.1f} (chance {r['chance_miou']:.0f}), "
                         f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}, {r['ms_per_iter']:.1f} ms/iteration, ok={r['ok']}")
    lines += ['', '## Targets', '', '| figure | value | target | met |', '|---|---|---|---|']
    for name, val, tgt, ok in targets: lines.append(f"| {name} | {val:.2f} | {tgt} | {'yes' if ok else 'NO'} |")
    if compile_first is not None: lines.append(f"\nFirst compiled {compile_first[0]} step (compilation included): {compile_first[1]:.0f} s.")
    stages = folder / 'stages.log'
    if stages.exists(): lines += ['', '## Stages', '', '```', stages.read_text().strip(), '```']
    s['targets'] = [dict(figure=n, value=v, target=t, met=ok) for n, v, t, ok in targets]
    return '\n'.join(lines) + '\n', s

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1: print(__doc__); return 2
    folder = Path(argv[0])
    text, s = summarize(folder)
    (folder / 'summary.md').write_text(text); write_json(s, folder / 'summary.json')
    print(text)
    return 0

if __name__ == '__main__':
    sys.exit(main())
