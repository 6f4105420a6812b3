"""Shared helpers of the benchmark scripts: where and with what a figure was taken, robust statistics, memory probes,
synthetic batches that drive the real `Trainer`, and JSON / table output.

Nothing here is imported by the package or its tests' assertions; benchmarks are run by hand (see README.md)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from jsonio import table, write_json  # noqa: F401  (output helpers without torch, for summarize.py)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))   # run from a checkout, installed or not


# ---- where a figure was taken -----------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()

def _git(*args) -> str | None:
    try:
        out = subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError): return None

def machine_info(device: torch.device) -> dict:
    "Date, software versions, processor, load and (on CUDA) the GPU and the settings that change its speed."
    import torchvision
    from cps_repro import __version__
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                command=' '.join([Path(sys.executable).name] + sys.argv),
                python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                cps_repro=__version__, git_commit=_git('rev-parse', '--short', 'HEAD'),
                git_dirty=bool(_git('status', '--porcelain', '--untracked-files=no')),
                platform=platform.platform(), cpu=_cpu_model(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), device=str(device))
    try: info['load_average_1_5_15'] = [round(x, 2) for x in os.getloadavg()]
    except OSError: pass
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_capability=f"{p.major}.{p.minor}",
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return info


# ---- statistics ---------------------------------------------------------------------------------------------------
def describe(xs) -> dict:
    "Median, quartiles, min, max, n and the relative inter-quartile range of a list of numbers."
    xs = sorted(float(x) for x in xs)
    if not xs: return dict(n=0)
    med = statistics.median(xs)
    q1, q3 = (statistics.quantiles(xs, n=4, method='inclusive')[i] for i in (0, 2)) if len(xs) > 1 else (xs[0], xs[0])
    return dict(n=len(xs), median=med, p25=q1, p75=q3, min=xs[0], max=xs[-1],
                iqr_rel=(q3 - q1) / med if med else float('nan'))


# ---- memory -------------------------------------------------------------------------------------------------------
_PAGE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096

def rss_bytes() -> int:
    "Resident set size of this process now (Linux /proc; ru_maxrss elsewhere)."
    try: return int(Path('/proc/self/statm').read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError): return max_rss_bytes()

def max_rss_bytes() -> int:
    "Peak resident set size of this process so far."
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == 'darwin' else r * 1024

class RSSSampler:
    "Highest RSS seen by a background thread (every `interval` s) between `start()` and `stop()`."
    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop, self._t = interval, 0, threading.Event(), None
    def start(self):
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True); self._t.start(); return self
    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes()); time.sleep(self.interval)
    def stop(self) -> int:
        self._stop.set(); self._t.join(); self.peak = max(self.peak, rss_bytes()); return self.peak

def tensor_bytes(tensors) -> int:
    "Bytes held by distinct tensors (shared storages counted once)."
    seen, total = set(), 0
    for t in tensors:
        if t is None or not torch.is_tensor(t): continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key in seen: continue
        seen.add(key); total += t.untyped_storage().nbytes()
    return total

def optimizer_state_tensors(opt) -> list:
    return [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


# ---- synthetic batches for the real trainer ------------------------------------------------------------------------
class SyntheticStream:
    """Endless collated batches with the shapes and dtypes an `InfiniteStream` of `SegmentationDataset` with
    `TrainTransform` yields (`image` uint8 [B, 3, H, W], `label` uint8 [B, H, W] with a band of ignore pixels,
    `valid` int64 [B, 4] with a padded band on the first image, `id` list), cycling through `n_distinct` pre-made
    batches; pinned when `pin` (as the CUDA loader pins them), so the trainer's own non-blocking host-to-device copy
    and the normalisation on the device (`data.to_device`) are part of every timed step. `state_dict` /
    `load_state_dict` as a stream has."""
    def __init__(self, batch: int, crop: int, num_classes: int, labeled: bool, seed: int, pin: bool = False,
                 n_distinct: int = 2, ignore_index: int = 255):
        g = torch.Generator().manual_seed(seed)
        self.batches = []
        for i in range(n_distinct):
            valid = torch.tensor([[0, crop, 0, crop]] * batch, dtype=torch.int64)
            valid[0, 1] = crop - max(1, crop // 16)                       # like a scaled image smaller than the crop
            b = {'image': torch.randint(0, 256, (batch, 3, crop, crop), generator=g, dtype=torch.uint8), 'valid': valid,
                 'id': [f'synthetic_{seed}_{i}_{j}' for j in range(batch)]}
            if labeled:
                label = torch.randint(0, num_classes, (batch, crop, crop), generator=g).to(torch.uint8)
                label[:, : max(1, crop // 16)] = ignore_index            # like the padded border of a small image
                b['label'] = label
            if pin: b = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in b.items()}
            self.batches.append(b)
        self.i = 0
    def __iter__(self): return self
    def __next__(self) -> dict:
        b = self.batches[self.i % len(self.batches)]; self.i += 1; return b
    def state_dict(self) -> dict: return {'i': self.i}
    def load_state_dict(self, s: dict) -> None: self.i = int(s['i'])

def synthetic_data(batch_l: int, batch_u: int, crop: int, num_classes: int, pin: bool, seed: int = 0):
    "A `TrainData` of synthetic streams: labeled, two unlabeled, no validation set."
    from cps_repro.loaders import TrainData
    return TrainData(SyntheticStream(batch_l, crop, num_classes, True, seed, pin),
                     SyntheticStream(batch_u, crop, num_classes, False, seed + 1, pin),
                     SyntheticStream(batch_u, crop, num_classes, False, seed + 2, pin),
                     None, 1000, 1000)

# The benchmarks hand the trainer `synthetic_data`, never a list file; explicit list paths (that do not exist) keep the
# trainer's data bookkeeping (`loaders.resolve_lists`, `partitions.data_identity`) off the official partition lookup.
SYNTHETIC_LISTS = 'benchmark-synthetic-streams'

def bench_config(method: str, backbone: str, crop: int, batch_l: int, batch_u: int, amp: str = 'none',
                 channels_last: bool = False, num_classes: int = 21, output_stride: int | None = None,
                 cutmix_mask: str = 'box', seed: int = 0, sup_loss: str = 'ce', compile: bool = False):
    """The experiment config of one benchmarked step: the paper's VOC recipe (`sup_loss='ohem'`: Cityscapes' supervised
    loss) at the given sizes, no pretrained file. λ (`hparams.weight`) is the paper's VOC value of CPS (1.5) and
    CPS+CutMix (1.0); `cutmix_mask` is `hparams.mask` of the methods that have one."""
    import dataclasses
    import cps_repro.methods  # noqa: F401  (registers every method's hyperparameters)
    from cps_repro.config import ExperimentConfig, ModelConfig, TrainConfig
    from cps_repro.overrides import apply_overrides
    # train.method and model.backbone build a preset (refused as overrides): set them in the sections themselves
    base = ExperimentConfig(name=f'bench_{method}', train=TrainConfig(method=method), model=ModelConfig(backbone=backbone))
    cfg = apply_overrides(base, {'train.sup_loss': sup_loss,
        'model.output_stride': output_stride or (4 if backbone.startswith('small_resnet') else 16), 'model.pretrained': None,
        'data.crop_size': crop, 'eval.crop_size': crop, 'data.num_classes': num_classes, 'data.workers': 0,
        'train.batch_size': batch_l, 'train.unlabeled_batch_size': batch_u, 'train.amp': amp,
        'train.channels_last': channels_last, 'train.compile': compile, 'train.seed': seed,
        'train.iters': 10**6, 'train.eval_every': 10**6, 'train.checkpoint_every': 10**6, 'train.log_every': 10**6,
        **{f'data.{k}_list': f'{SYNTHETIC_LISTS}/{k}.txt' for k in ('labeled', 'unlabeled', 'val')}})
    # the method's hyperparameters: a second call, once cfg.hparams is the method's dataclass
    have = {f.name for f in dataclasses.fields(cfg.hparams)} if dataclasses.is_dataclass(cfg.hparams) else set()
    hp = {}
    if method in ('cps', 'cps_cutmix') and 'weight' in have: hp['hparams.weight'] = {'cps': 1.5, 'cps_cutmix': 1.0}[method]
    if 'mask' in have: hp['hparams.mask'] = cutmix_mask
    return apply_overrides(cfg, hp) if hp else cfg


def mib(x) -> float | None: return None if x is None else x / 2**20

def sync(device: torch.device) -> None:
    if device.type == 'cuda': torch.cuda.synchronize(device)
