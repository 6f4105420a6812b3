"""Pages of the documentation site generated from committed files (used by tools/build_docs.py; nothing is typed).

- `results_markdown()`: the Results page, in the style of a model zoo. Every number measured so far (the CPU
  miniature's runs, committed under nbs/mini_results/) links to the file it comes from (the run's `result.json`, which
  holds its whole config and its evaluation history, or the table CSV where only the CSV is committed), grouped by
  recipe, with the paper's number beside it where the paper has one; the paper-scale cells, none of them run yet, say
  "not run" beside the paper's numbers (cps_repro/assets/paper_tables/).
- `get_started_markdown()`: docs/get_started.md with its `<!-- readme-section: ... -->` lines replaced by that section
  of the README (the demo's expected output lives once, in nbs/index.ipynb).
Links are written relative to the site's root (the pages are staged at build/docs_src/<page>.md, beside nbs/).
"""
from __future__ import annotations

import re, sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))        # cps_repro of this checkout
MINI = ROOT / 'nbs' / 'mini_results'
NOT_RUN = 'not run'
PAPER_METHOD = {'cps': 'CPS w/o CutMix', 'cps_cutmix': 'CPS w/ CutMix'}   # the paper's row names (Table 1)
METHOD_ORDER = ('supervised', 'cps', 'cps_cutmix', 'self_training', 'mean_teacher', 'cct', 'gct')


def _labels():
    from cps_repro.report import method_label, split_label
    return method_label, split_label


def _mean_sd(values) -> str:
    v = pd.Series(list(values), dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def _run_link(run_id: str, miou: float, table_csv: Path, site_root: Path) -> str:
    "The number, linked to the run's result.json when it is committed, else to the CSV that holds it."
    res = next(iter(sorted(table_csv.parent.glob(f'run_results/{run_id}/result.json'))), None)
    target = res or table_csv
    return f"[{miou:.2f}]({target.relative_to(site_root).as_posix()})"


def _paper_table1():
    from cps_repro.report import paper_numbers
    p = paper_numbers('table1')
    return p[p.backbone == 'R50']


def _paper_value(paper, method: str, split: str) -> str:
    _, split_label = _labels()
    row = paper[(paper.method == PAPER_METHOD.get(method, '')) & (paper.split == split_label(split))]
    return f"{row.miou.iloc[0]:.2f}" if len(row) else '—'


def mini_recipe_table(csv: Path, site_root: Path, paper=None) -> str:
    "One data seed's table of one recipe: a row per (split, method), a column per training seed, mean ± sd."
    method_label, split_label = _labels()
    t = pd.read_csv(csv)
    seeds = sorted(t.seed.unique())
    splits = list(dict.fromkeys(sorted(t.split, key=lambda s: (s == 'full', -int(s.split('_')[1]) if '_' in s else 0))))
    head = ['labels', 'method', 'preset'] + (['paper (VOC, R50)'] if paper is not None else []) \
        + [f'training seed {s}' for s in seeds] + ['mean ± sd']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for sp in splits:
        for m in sorted(t[t.split == sp].method.unique(), key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99):
            g = t[(t.split == sp) & (t.method == m)]
            n_lab = int(g.n_labeled.iloc[0]) if 'n_labeled' in g else None
            cells = []
            for s in seeds:
                r = g[g.seed == s]
                cells.append(_run_link(r.run_id.iloc[0], r.miou.iloc[0], csv, site_root) if len(r) else NOT_RUN)
            row = [f"{split_label(sp)} ({n_lab:,})" if n_lab else split_label(sp), method_label(m),
                   f"[`mini_{m}`](nbs/15_presets.ipynb)"] + ([_paper_value(paper, m, sp)] if paper is not None else []) \
                + cells + [_mean_sd(g.miou)]
            lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def paper_scale_tables() -> str:
    "Tables 1-3 and the headline: the paper's number and 'not run' for ours (no paper-scale run exists yet)."
    from cps_repro.report import PAPER_TABLES, TABLE_TITLES, paper_numbers
    out = []
    for t in PAPER_TABLES:
        p = paper_numbers(t)
        splits = list(dict.fromkeys(p.split))
        head = ['method', 'backbone'] + [f"{s}: paper / ours" for s in splits]
        lines = [f"### {TABLE_TITLES[t]}", '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for (m, b), g in p.groupby(['method', 'backbone'], sort=False):
            vals = {r.split: f"{r.miou:.2f} / {NOT_RUN}" for r in g.itertuples()}
            lines.append('| ' + ' | '.join([m, b] + [vals.get(s, '—') for s in splits]) + ' |')
        out.append('\n'.join(lines))
    return '\n\n'.join(out)


def results_markdown(site_root: Path = ROOT, mini: Path = MINI) -> str:
    "The Results page (links relative to `site_root`, where nbs/ lives)."
    parts = ["# Results", "",
             "Every number measured so far, each linked to the file it comes from: the run's `result.json` (its whole "
             "config, its evaluation history and its data provenance) or, where only the table is committed, the table's "
             "CSV. This page is generated by `tools/site_pages.py` from the committed files each time the site is built; "
             "no number on it is typed. mIoU (%) of network 1 at the end of training, on the validation images.", "",
             "**What has been run:** the CPU miniature only, on generated data (32 px texture scenes, 5 classes). "
             "No preset of the paper's scale has been run yet (no GPU run, no PASCAL VOC or Cityscapes data): "
             f"those cells say *{NOT_RUN}* beside the paper's numbers.", ""]
    paper = _paper_table1()
    current = sorted(mini.glob('data_seed*/mini_table.csv'), key=lambda p: int(re.sub(r'\D', '', p.parent.name) or 0))
    if current:
        parts += ["## CPU miniature: the tuned recipe (generated data)", "",
                  "Presets `mini_supervised`, `mini_cps`, `mini_cps_cutmix`, `mini_self_training` "
                  "([15_presets](nbs/15_presets.ipynb)). This recipe is **tuned for the miniature, not the paper's method "
                  "as published**: class-balanced pseudo labels (balance 0.5), λ ramp-ups, a half-image CutMix mask and "
                  "λ 1.5; every deviation and the probes that chose them are in [11_mini](nbs/11_mini.ipynb). The paper's "
                  "column is PASCAL VOC with ResNet-50 (Table 1): another dataset at another scale, for orientation only.", ""]
        for csv in current:
            k = int(re.sub(r'\D', '', csv.parent.name))
            t = pd.read_csv(csv)
            kind = ('the development seed: the recipe was chosen on these validation images' if k == 0
                    else 'a fresh seed, generated after the recipe was fixed')
            hist = csv.with_name('mini_history.csv')
            files = f"table [{csv.name}]({csv.relative_to(site_root).as_posix()})" + (
                f", evaluation histories [{hist.name}]({hist.relative_to(site_root).as_posix()})" if hist.is_file() else '')
            parts += [f"### Data seed {k} ({'development' if k == 0 else 'fresh'})", "",
                      f"Data seed {k} is {kind}; {int(t.iters.iloc[0]):,} iterations per run; {files}.", "",
                      mini_recipe_table(csv, site_root, paper), ""]
    earlier = sorted((mini / 'earlier').glob('*_data_seed*.csv'))
    earlier = [p for p in earlier if not p.stem.endswith('_history')]
    if earlier:
        parts += ["## CPU miniature: earlier recipes (history)", "",
                  "Recipes tried before the current one, each on its own data (2,000 generated images, so not comparable with "
                  "the tables above); [11_mini](nbs/11_mini.ipynb) tells why each was replaced. The probes of every round "
                  f"are in [probes.csv]({(mini / 'probes.csv').relative_to(site_root).as_posix()}).", ""]
        for csv in earlier:
            recipe, k = re.match(r'(.+)_data_seed(\d+)$', csv.stem).groups()
            parts += [f"### Recipe `{recipe}`, data seed {k}", "", mini_recipe_table(csv, site_root), ""]
    parts += ["## Paper scale (GPU): not run", "",
              "The presets of every cell below are in [15_presets](nbs/15_presets.ipynb), and "
              "`python -c \"from cps_repro.experiment import cell_commands; [print(r['command']) for r in cell_commands('table1')]\"` "
              "prints the command of each (`table2`, `table3`, `headline` likewise). The paper's numbers are from "
              "`cps_repro/assets/paper_tables/`.", "", paper_scale_tables(), ""]
    return '\n'.join(parts)


def readme_section(readme: str, heading: str) -> str:
    "The README's section under `## heading` (without the heading), up to the next `## `."
    m = re.search(rf'^## {re.escape(heading)}\s*\n(.*?)(?=^## |\Z)', readme, flags=re.S | re.M)
    if not m: raise ValueError(f"README.md has no section '## {heading}' (docs/get_started.md includes it)")
    return m.group(1).strip()


def root_links(markdown: str) -> str:
    "Links of the README (written from the repository root) as seen from a page at the site's root."
    return markdown.replace('](docs/get_started.md', '](get_started.md')


def get_started_markdown(template: Path = ROOT / 'docs' / 'get_started.md', readme: Path = ROOT / 'README.md') -> str:
    """docs/get_started.md for the site: each `<!-- readme-section: Heading -->` line becomes that README section, and
    links written from docs/ (`../nbs/...`) are made relative to the site's root, where the page is staged."""
    text = readme.read_text()
    page = re.sub(r'\]\(\.\./', '](', template.read_text())
    page = page.replace('the Results page of the site (`make docs`)', 'the [Results](results.md) page')
    return re.sub(r'^<!-- readme-section: (.+?) -->.*$', lambda m: root_links(readme_section(text, m.group(1))), page, flags=re.M)
