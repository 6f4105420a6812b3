#!/usr/bin/env python
"""Download the official CPS partition lists into ROOT and verify their sha256 (same as `cps-repro splits fetch`).

    python data_scripts/fetch_partitions.py data/voc/partitions

ROOT mirrors the official repository's DATA/ folder (pascal_voc/subset_train_aug/..., city/config_new/...); the
trainer looks for it at <data root>/partitions. Files already present with the right sha256 are skipped, so
re-running resumes. --source takes a base URL (https://, file://) or a local folder with the same layout.
"""
from __future__ import annotations

import argparse
import sys

try:
    from cps_repro.partitions import OFFICIAL_DATASETS, cli_fetch
except ImportError as e:  # pragma: no cover - exercised only without the package
    sys.exit(f'fetch_partitions.py: cannot import cps_repro ({e}); install the package first: `pip install -e .` '
             f'in the repository root')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='fetch_partitions.py', description=__doc__.split('\n\n')[0])
    p.add_argument('root', help='folder to write the lists into (usually <data root>/partitions)')
    p.add_argument('--source', help='base URL or folder to fetch from (default: the pinned commit of the official '
                                    'repository)')
    p.add_argument('--datasets', nargs='*', choices=OFFICIAL_DATASETS,
                   help='only these datasets\' lists (default: all)')
    p.add_argument('--overwrite', action='store_true', help='replace existing files whose sha256 is wrong')
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    return cli_fetch(a.root, source=a.source, overwrite=a.overwrite, datasets=a.datasets or None)


if __name__ == '__main__':
    sys.exit(main())
