#!/usr/bin/env python
"""What torch.compile needs on this machine, without importing torch: a C/C++ compiler (gcc, clang or $CC/$CXX),
`Python.h` of this interpreter, triton (CUDA only) and free disk for the caches; the Python version. Used by
gpu_check.sh's preflight (and before its compile stage when preflight is not run): without them the compile stage is
skipped with the reason instead of failing after minutes.

    python benchmarks/toolchain.py [cuda|cpu] [FOLDER]      # prints the JSON; FOLDER: where the disk is measured
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path


def _first_line(cmd: list) -> str | None:
    try: r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError): return None
    return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 and (r.stdout or r.stderr).strip() else None

def toolchain(device: str = 'cuda', folder='.') -> dict:
    "The facts, and `compile_ok` with `compile_skip_reason` when it is False."
    out = {'python': platform.python_version(), 'python_executable': sys.executable}
    names = [os.environ[k] for k in ('CXX', 'CC') if os.environ.get(k)] + ['g++', 'gcc', 'clang++', 'clang', 'c++', 'cc']
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    out['compiler'] = f"{found}: {_first_line([found, '--version'])}" if found else None
    header = Path(sysconfig.get_paths()['include']) / 'Python.h'
    out['python_h'] = str(header) if header.is_file() else None
    if importlib.util.find_spec('triton') is not None:
        try: out['triton'] = importlib.metadata.version('triton')
        except importlib.metadata.PackageNotFoundError: out['triton'] = 'present (version unknown)'
    else: out['triton'] = None
    try: out['free_disk_gib'] = round(shutil.disk_usage(folder).free / 2**30, 1)
    except OSError: out['free_disk_gib'] = None
    missing = [what for what, ok in (('a C/C++ compiler (gcc or clang)', out['compiler']), ('Python.h', out['python_h']),
                                     ('triton', out['triton'] or device != 'cuda'),
                                     ('1 GiB of free disk', (out['free_disk_gib'] or 0) >= 1)) if not ok]
    out['compile_ok'] = not missing
    out['compile_skip_reason'] = f"torch.compile needs {', '.join(missing)}" if missing else None
    return out

if __name__ == '__main__':
    print(json.dumps(toolchain(*(sys.argv[1:3] or ['cuda'])), indent=1))
