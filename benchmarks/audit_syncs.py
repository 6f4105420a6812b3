#!/usr/bin/env python
"""Find the host-device synchronisations inside one `Trainer.step()`.

Two probes, per method:
* everywhere (CPU too): a `TorchFunctionMode` records, during one step, every call that makes the host wait for
  the device on CUDA: `.item()`, `.tolist()`, `bool()/int()/float()` of a tensor, `.cpu()`, `.numpy()`, ops whose
  output size depends on the data (`nonzero`, `masked_select`, `unique`, one-argument `where`), and copies of a CPU
  tensor that is not pinned, or not `non_blocking`, to a device (`.to(device)`): a blocking host-to-device copy on
  CUDA. Each is reported with the library line that made it. On a CPU run every tensor is on the host, so a `.to`
  that names a device stands for a copy to the training device, unless its input came from a non-blocking copy.
* on CUDA: `torch.cuda.set_sync_debug_mode('warn')` during one step; every synchronising CUDA call warns, and the
  warnings are counted with their library lines.

    python benchmarks/audit_syncs.py --device cpu --tiny
    python benchmarks/audit_syncs.py --device cuda --backbone resnet101 --crop 512 --batch 8 --variants bf16+cl,bf16+cl+lean
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import traceback
import warnings
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from torch.overrides import TorchFunctionMode

from common import bench_config, machine_info, synthetic_data, write_json

HOST_READS = {'item', 'tolist', '__bool__', '__int__', '__float__', '__index__', 'cpu', 'numpy'}
DATA_DEPENDENT = {'nonzero', 'masked_select', 'unique', '_unique2', 'unique_consecutive', 'nonzero_static'}
HERE = Path(__file__).resolve().parent


def _where() -> str:
    "The innermost stack frame in the package (else in these scripts) that led here."
    frames = traceback.extract_stack()[:-2]
    for f in reversed(frames):
        if '/cps_repro/' in f.filename: return f"cps_repro/{f.filename.split('/cps_repro/')[-1]}:{f.lineno} ({f.name})"
    for f in reversed(frames):
        if Path(f.filename).resolve().parent == HERE and f.name not in ('__torch_function__', '_where'):
            return f"benchmarks/{Path(f.filename).name}:{f.lineno} ({f.name})"
    return '?'

def _device_arg(args, kwargs):
    for x in list(args[1:]) + [kwargs.get('device')]:
        if isinstance(x, (str, torch.device)):
            try: return torch.device(x)
            except (RuntimeError, TypeError): pass
        if torch.is_tensor(x): return x.device
    return None

class SyncRecorder(TorchFunctionMode):
    "Records the calls that synchronise on CUDA (see the module docstring), keyed by (kind, library line)."
    def __init__(self, target: torch.device):
        super().__init__(); self.target, self.calls = target, collections.Counter()
        self.copied = {}   # id -> weakref; CPU runs: results of non-blocking copies, which would live on the device
    def _copied(self, t) -> bool:
        ref = self.copied.get(id(t))
        return ref is not None and ref() is t
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', str(func))
        kind = None
        if name in HOST_READS: kind = f'host read: {name}'
        elif name in DATA_DEPENDENT or (name == 'where' and len(args) + len(kwargs) == 1):
            kind = f'data-dependent shape: {name}'
        elif name in ('to', 'copy_') and args and torch.is_tensor(args[0]):
            # on CPU every tensor is on the host, so an explicit device argument stands for the training device
            src = args[0] if name == 'to' else args[1] if len(args) > 1 and torch.is_tensor(args[1]) else None
            dst = _device_arg(args, kwargs) if name == 'to' else args[0].device
            copy = (src is not None and src.device.type == 'cpu' and dst is not None and not self._copied(src)
                    and (dst.type != 'cpu' or self.target.type == 'cpu'))
            non_blocking = bool(kwargs.get('non_blocking', False) or (name == 'to' and len(args) > 2 and args[2] is True))
            if copy:
                pinned = src.is_pinned() if torch.cuda.is_available() else True   # CPU-only runs: the CUDA loader pins
                if not (non_blocking and pinned): kind = f'blocking host-to-device copy: {name}'
            if copy and non_blocking and self.target.type == 'cpu':
                out = func(*args, **kwargs); self.copied[id(out)] = weakref.ref(out); return out
        if kind: self.calls[(kind, _where())] += 1
        return func(*args, **kwargs)


def audit(method: str, variant: str, a, device: torch.device) -> dict:
    from cps_repro.train import Trainer
    from bench_step import parse_variant
    from lean import LeanTrainer
    v = parse_variant(variant)
    cfg = bench_config(method, a.backbone, a.crop, a.batch, a.batch, amp=v.amp, channels_last=v.channels_last, compile=v.compile,
                       num_classes=a.num_classes, output_stride=a.output_stride, cutmix_mask=a.cutmix_mask, sup_loss=a.sup_loss)
    data = synthetic_data(a.batch, a.batch, a.crop, a.num_classes, device.type == 'cuda', seed=a.seed)
    with tempfile.TemporaryDirectory() as d:
        tr = (LeanTrainer(cfg, run_dir=d, device=str(device), progress=False, data=data, parts=v.lean) if v.lean
              else Trainer(cfg, run_dir=d, device=str(device), progress=False, data=data))
        from bench_step import apply_flags
        apply_flags(v)
        tr.step()                                            # warm-up: first-call work is not the steady state
        if device.type == 'cuda': torch.cuda.synchronize()
        rec = SyncRecorder(device)
        with rec: tr.step()
        out = dict(method=method, variant=variant,
                   calls=[dict(kind=k, where=w, count=n) for (k, w), n in sorted(rec.calls.items())])
        if device.type == 'cuda':
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                torch.cuda.set_sync_debug_mode('warn')
                try: tr.step()
                finally: torch.cuda.set_sync_debug_mode('default')
            sites = collections.Counter()
            for w in caught:
                if 'synchroniz' in str(w.message).lower(): sites[f"{Path(w.filename).name}:{w.lineno}"] += 1
            out['cuda_sync_warnings'] = dict(sites)
    return out

def check_pseudo_labels(device='cpu') -> bool:
    "argmax(1) and max(1).indices (what `losses.pseudo_labels` uses) agree on bf16-rounded logits with forced ties and a NaN, on `device`."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 21, 33, 47, generator=g).bfloat16().float()
    x[:, 3] = x[:, 7]; x[0, 2, 0, 0] = float('nan')
    x = x.to(device)
    return bool(torch.equal(x.argmax(1), x.max(1).indices))

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--backbone', default='small_resnet')
    p.add_argument('--crop', type=int, default=64)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--num-classes', type=int, default=21)
    p.add_argument('--output-stride', type=int, default=None)
    p.add_argument('--cutmix-mask', default='box', choices=('box', 'half'))
    p.add_argument('--sup-loss', default='ce', choices=('ce', 'ohem'), help="'ohem': Cityscapes' supervised loss")
    p.add_argument('--methods', default='supervised,cps,cps_cutmix')
    p.add_argument('--variants', default='fp32,fp32+lean', help='as in bench_step.py')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None)
    p.add_argument('--tiny', action='store_true')
    a = p.parse_args(argv)
    if a.tiny: a.backbone, a.crop, a.batch = 'small_resnet', 32, 2
    device = torch.device(a.device)
    torch.set_num_threads(a.threads or (1 if device.type == 'cpu' else torch.get_num_threads()))
    out = dict(kind='audit_syncs', machine=machine_info(device), settings=vars(a).copy(), results=[])
    if device.type == 'cuda':
        out['argmax_equals_max_indices_on_device'] = check_pseudo_labels(device)
        print(f"argmax(1) == max(1).indices on {device} (ties, NaN): {out['argmax_equals_max_indices_on_device']}")
    for v in [x.strip() for x in a.variants.split(',') if x.strip()]:
        for m in [x.strip() for x in a.methods.split(',') if x.strip()]:
            r = audit(m, v, a, device)
            out['results'].append(r)
            n = sum(c['count'] for c in r['calls'])
            line = f"{v:>14} {m:>11}: {n} synchronising call(s) in one step"
            if 'cuda_sync_warnings' in r: line += f"; CUDA sync-debug warnings: {sum(r['cuda_sync_warnings'].values())}"
            print(line)
            for c in r['calls']: print(f"{'':>28}{c['count']} x {c['kind']}  at {c['where']}")
            for site, k in r.get('cuda_sync_warnings', {}).items(): print(f"{'':>28}{k} x CUDA sync warning at {site}")
    if a.json: write_json(out, a.json)
    return 0

if __name__ == '__main__':
    sys.exit(main())
