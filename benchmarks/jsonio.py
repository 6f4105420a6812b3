"""JSON and plain-text table output of the benchmark scripts, without torch: `summarize.py` (run by gpu_check.sh after
every stage) imports only this, so a re-pack costs no torch import."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(obj, path) -> Path:
    "Write `obj` to `path` atomically (a partial run keeps its last complete file)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_text(json.dumps(obj, indent=1, default=str) + '\n'); os.replace(tmp, path)
    return path

def table(rows: list[dict], cols: list[tuple]) -> str:
    "A plain-text table of `rows` with columns `(header, key, format)`."
    cells = [[h for h, _, _ in cols]] + [[('' if r.get(k) is None else f.format(r[k])) for _, k, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ['  '.join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)
