#!/usr/bin/env python
"""Give the committed runs the run ids of issue 26's scheme, reproducibly (no id is typed by hand).

Before issue 26 a run id hashed the whole config, the data root's path and the free-text notes included. Now it
hashes the config without where the data is and without the notes, plus the data's fingerprint (the lists' sha256
and the sizes of the files they name: `cps_repro.config.run_data`). The fingerprint needs the data, so the generated
datasets are regenerated first (the generator writes the same files for the same seed and sizes):

    python tools/migrate_run_ids.py --data data/mini_seed0 --data data/mini_seed7 --data data/mini_seed8
    python tools/migrate_run_ids.py --data ... --check        # change nothing; exit 1 when something would change

`--make-mini-data` generates the mini datasets of data seeds 0, 7 and 8 (MINI_N_TRAIN + MINI_N_VAL images) into the
`--data` folders that do not exist yet. Then, under `--results` (default nbs/mini_results):

1. every `result.json` whose recorded list sha256s equal those of one `--data` root (that is how its data is found,
   and checked) gets the id of its recorded config on that data; a self-training run's `teacher_checkpoint` path is
   renamed with its teacher's new id first. The file records `migrated_from` (the old id and teacher path), the new
   `data.fingerprint` and each list's `files` summary; its folder is renamed to the new id (`git mv` when tracked).
2. every CSV with a `run_id` column: ids from step 1; a row without a result.json (data seeds 7 and 8 committed only
   their tables) gets the id of the mini job it describes (method, split, seed, iters) on the `--data` root of its
   `data_seed`, only when that job's labeled and unlabeled counts equal the row's.

Run it again whenever what enters a run id changes: migrated runs are renamed again (keeping the `migrated_from`
of their first migration); `--check` says whether the committed ids are current.

What cannot be migrated (no recorded config and no data seed among `--data`, e.g. the earlier recipes' tables under
`earlier/`) is listed and left as it is.
"""
from __future__ import annotations

import argparse, csv, io, json, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cps_repro.methods  # noqa: F401  (registers the methods' hyperparameters)
from cps_repro.config import ExperimentConfig, run_data
from cps_repro.partitions import synthetic_marker

SCHEME = 'before issue 26: sha256 of the whole config, data root path and notes included'


def _list_shas(cfg: ExperimentConfig) -> dict:
    "{role: sha256} of the lists `cfg` reads (found as the loaders find them)."
    return {k: v['sha256'] for k, v in run_data(cfg)['lists'].items()}


def _with_root(config: dict, root) -> ExperimentConfig:
    "The recorded config on the data at `root` (list paths under the recorded root moved along)."
    d = json.loads(json.dumps(config)); old = d['data']['root'].rstrip('/') + '/'
    d['data']['root'] = str(root)
    for k in ('partitions_root', 'labeled_list', 'unlabeled_list', 'val_list'):
        v = d['data'].get(k)
        if isinstance(v, str) and v.startswith(old): d['data'][k] = str(Path(root) / v[len(old):])
    return ExperimentConfig.from_dict(d)


def _find_root(result: dict, roots: list[Path]):
    """The --data root on which the result's recorded lists have the recorded sha256s, else None. A result that
    recorded no lists (own lists named relative to the data root were not found before issue 26: split 'full') is
    matched by its data root's folder name, and checked by its labeled and unlabeled counts."""
    want = {k: v['sha256'] for k, v in ((result.get('data') or {}).get('lists') or {}).items()}
    if not want:
        name = Path(result['config']['data']['root']).name
        for root in (r for r in roots if r.name == name):
            counts = {k: v['files']['count'] for k, v in run_data(_with_root(result['config'], root))['lists'].items()}
            if (counts.get('labeled'), counts.get('unlabeled', 0) if result['method'] != 'supervised' else 0) == \
                    (result['n_labeled'], result['n_unlabeled']): return root
        return None
    for root in roots:
        try: have = _list_shas(_with_root(result['config'], root))
        except (OSError, ValueError): continue
        if have == want: return root
    return None


def _new_result(result: dict, cfg: ExperimentConfig, old_teacher) -> dict:
    "The result with its new id, data fingerprint and lists (paths as under the data root it recorded)."
    ident, recorded = run_data(cfg), Path(result['config']['data']['root'])
    def path(p):
        try: return str(recorded / Path(p).relative_to(Path(cfg.data.root)))
        except ValueError: return p
    old = result.get('data') or {}
    data = {**old, 'fingerprint': ident['fingerprint'],
            'lists': {k: {**v, 'path': path(v['path'])} for k, v in ident['lists'].items()}}
    out = {**result, 'run_id': cfg.run_id, 'data': data, 'config': {**result['config'], 'model': {
        **result['config']['model'], 'teacher_checkpoint': cfg.model.teacher_checkpoint}}}
    out['migrated_from'] = {'run_id': result['run_id'], 'scheme': SCHEME,
                            **({'teacher_checkpoint': old_teacher} if old_teacher else {})}
    return out


def migrate_results(results_dir: Path, roots: list[Path]):
    "(new result.json texts by old path, {old id: new id}, skipped paths with the reason)."
    paths = sorted(results_dir.rglob('result.json'))
    loaded = {p: json.loads(p.read_text()) for p in paths}
    todo, mapping, writes, skipped = loaded, {}, {}, []   # migrated ones again too: the id scheme may move on
    # teachers first: a self-training config names its teacher's run directory
    for p, r in sorted(todo.items(), key=lambda pr: pr[1]['config']['model'].get('teacher_checkpoint') is not None):
        root = _find_root(r, roots)
        if root is None:
            skipped.append((p, 'its lists are in none of the --data roots')); continue
        config = json.loads(json.dumps(r['config']))
        teacher = config['model'].get('teacher_checkpoint')
        if teacher:
            parts = Path(teacher).parts
            tid = parts[-2] if len(parts) >= 2 else None
            if tid not in mapping:
                skipped.append((p, f'its teacher {tid} was not migrated')); continue
            config['model']['teacher_checkpoint'] = str(Path(*parts[:-2], mapping[tid], parts[-1]))
        cfg = _with_root(config, root)
        new = _new_result(r, cfg, teacher)
        new['config']['data'] = r['config']['data']            # the config as it ran (where its data was then)
        if 'migrated_from' in r: new['migrated_from'] = r['migrated_from']   # the id it had before issue 26
        mapping[r['run_id']] = mapping[new['migrated_from']['run_id']] = cfg.run_id
        if new != r: writes[p] = new
    return writes, mapping, skipped


def _mini_id(row: dict, roots_by_seed: dict):
    "The id of today's mini job that `row` of a current table describes, on its data seed's --data root."
    from cps_repro.mini import mini_job
    root = roots_by_seed.get(int(row['data_seed'])) if row.get('data_seed', '') != '' else None
    if root is None: return None
    out_dir = f"results/mini/data_seed{int(row['data_seed'])}"      # exp_mini's runs_dir (a teacher's path)
    job = mini_job(row['method'], row['split'], int(row['seed']), root, out_dir, iters=int(row['iters']))
    ident = run_data(job.cfg)
    counts = {k: v['files']['count'] for k, v in ident['lists'].items()}
    n_unl = counts.get('unlabeled', 0) if row['method'] != 'supervised' else 0
    if (int(row['n_labeled']), int(row['n_unlabeled'])) != (counts.get('labeled'), n_unl): return None
    return job.cfg.run_id


CURRENT_TABLES = 'data_seed*/*.csv'   # the tables of today's recipe (earlier/ holds earlier recipes' tables)

def migrate_csvs(results_dir: Path, mapping: dict, roots_by_seed: dict):
    """(new CSV texts by path, rows left as they are: [(path, run_id, reason)]). Rows without a migrated result.json
    are rebuilt as today's mini jobs only in `CURRENT_TABLES`."""
    current = set(results_dir.glob(CURRENT_TABLES))
    writes, left = {}, []
    for p in sorted(results_dir.rglob('*.csv')):
        text = p.read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or 'run_id' not in rows[0]: continue
        changed = False
        for row in rows:
            old = row['run_id']
            if old in mapping.values(): continue                              # migrated already
            new = mapping.get(old) or (_mini_id(row, roots_by_seed) if p in current else None)
            if new is None:
                left.append((p, old, 'no recorded config' + (' and no --data root for its data seed' if p in current else
                                                             ' (a table of an earlier recipe)'))); continue
            if new != old: row['run_id'], changed = new, True
        if changed:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator='\n')
            w.writeheader(); w.writerows(rows)
            writes[p] = buf.getvalue()
    return writes, left


def _seed_of(root: Path):
    m = synthetic_marker(root)
    return json.loads(m.read_text()).get('seed') if m is not None else None


def _make_mini_data(roots: list[Path]) -> None:
    from cps_repro.mini import ensure_dataset
    from cps_repro.presets import MINI_N_TRAIN, MINI_N_VAL
    for root in roots:
        if root.exists(): continue
        seed = int(root.name.rsplit('seed', 1)[-1])
        print(f"generating {root} (data seed {seed}, {MINI_N_TRAIN} + {MINI_N_VAL} images)")
        ensure_dataset(root, seed, MINI_N_TRAIN, MINI_N_VAL)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', action='append', required=True, type=Path, help='a regenerated dataset (repeatable)')
    p.add_argument('--results', type=Path, default=REPO / 'nbs' / 'mini_results')
    p.add_argument('--make-mini-data', action='store_true', help='generate the missing --data roots named *_seed<N>')
    p.add_argument('--check', action='store_true', help='change nothing; exit 1 when something would change')
    a = p.parse_args(argv)
    if a.make_mini_data: _make_mini_data(a.data)
    roots = [r for r in a.data if r.is_dir()]
    roots_by_seed = {s: r for r in roots if (s := _seed_of(r)) is not None}
    results, mapping, skipped = migrate_results(a.results, roots)
    csvs, left = migrate_csvs(a.results, mapping, roots_by_seed)
    for path, why in skipped: print(f"left as it is: {path.relative_to(a.results)}: {why}")
    kept = {}
    for path, rid, why in left: kept.setdefault((path, why), []).append(rid)
    for (path, why), ids in kept.items(): print(f"left as it is: {len(ids)} run ids in {path.relative_to(a.results)}: {why}")
    print(f"{len(results)} result.json files and {len(csvs)} CSV files {'would change' if a.check else 'migrated'}")
    if a.check: return 1 if results or csvs else 0
    for path, new in results.items():
        path.write_text(json.dumps(new, indent=2) + '\n')
        dest = path.parent.with_name(new['run_id'])
        if dest != path.parent:
            tracked = subprocess.run(['git', 'ls-files', '--error-unmatch', str(path)], cwd=REPO, capture_output=True).returncode == 0
            if tracked: subprocess.run(['git', 'mv', str(path.parent), str(dest)], cwd=REPO, check=True)
            else: path.parent.rename(dest)
    for path, text in csvs.items(): path.write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
