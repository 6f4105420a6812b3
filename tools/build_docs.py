"""Build the documentation site into _docs/ from what is committed: `python tools/build_docs.py` (or `make docs`).

Stages the sources into build/docs_src/ and runs Sphinx (configuration: docs/conf.py):
- the home page is README.md (itself generated from nbs/index.ipynb), with the site's table of contents;
- every notebook of nbs/ is a page, rendered with the outputs it was committed with (nothing is executed): the
  numbered chapters, the paper's tables and figures, the recipe, and the papermill experiment templates;
  cells marked `#| hide` are left out and `#| echo: false` cells show only their outputs, as nbdev does;
- api/<module>.md: the API reference of every cps_repro module from its docstrings (autodoc, the module's __all__).
README's links to nbs/XX.ipynb become links to the chapter pages, and its images (nbs/...) are copied along.
Open _docs/index.html in a browser: the site works from the file system, no server needed.
"""
from __future__ import annotations

import argparse, json, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / 'build' / 'docs_src'
OUT = ROOT / '_docs'
ASSET_SUFFIXES = ('.png', '.jpg', '.jpeg', '.svg', '.gif', '.csv')
DIRECTIVE = re.compile(r'^\s*#\|\s*(.*?)\s*$')


def _text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


def _directives(source: str) -> list[str]:
    return [m.group(1).replace(' ', '') for m in map(DIRECTIVE.match, source.splitlines()) if m]


def stage_notebook(src: Path, dst: Path) -> None:
    "Copy a notebook for the site: `#| hide` cells dropped, `#| echo: false` cells tagged `remove-input`."
    nb = json.loads(src.read_text())
    cells = []
    for c in nb['cells']:
        d = _directives(_text(c['source'])) if c['cell_type'] == 'code' else []
        if 'hide' in d: continue
        if d and all(x.startswith('default_exp') for x in d) and all(DIRECTIVE.match(l) or not l.strip() for l in _text(c['source']).splitlines()):
            continue                                       # a lone `#| default_exp` cell says nothing to a reader
        if 'echo:false' in d:
            tags = c.setdefault('metadata', {}).setdefault('tags', [])
            if 'remove-input' not in tags: tags.append('remove-input')
        cells.append(c)
    nb['cells'] = cells
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False))


def title(nb_path: Path) -> str:
    "The notebook's `# Title` (first markdown heading)."
    for c in json.loads(nb_path.read_text())['cells']:
        m = re.search(r'^#\s+(.+)$', _text(c['source']), re.M) if c['cell_type'] == 'markdown' else None
        if m: return m.group(1).strip()
    return nb_path.stem


def modules() -> list[str]:
    "The library's public modules (cps_repro/*.py except private ones), sorted."
    return sorted(p.stem for p in (ROOT / 'cps_repro').glob('*.py') if not p.stem.startswith('_'))


def api_pages() -> None:
    api = SRC / 'api'; api.mkdir(parents=True, exist_ok=True)
    for m in modules():
        (api / f'{m}.md').write_text(f"# `cps_repro.{m}`\n\n```{{eval-rst}}\n.. automodule:: cps_repro.{m}\n   :members:\n```\n")
    toc = '\n'.join(modules())
    (api / 'index.md').write_text("# API reference\n\nThe library's public names, module by module, from their docstrings. "
                                  "Each module is exported from the chapter of the same name, where the prose, examples and "
                                  f"tests are.\n\n```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n")


def home_page(notebooks: list[Path]) -> None:
    "README.md as index.md, followed by hidden tables of contents for the sidebar."
    readme = (ROOT / 'README.md').read_text()
    readme = re.sub(r'^<!--.*?-->\s*', '', readme, flags=re.S)
    groups = {'Chapters': [p for p in notebooks if re.match(r'\d', p.name)],
              'The paper': [p for p in notebooks if p.stem in ('paper_tables', 'paper_figures', 'recipe')],
              'Experiment notebooks (papermill templates)': [p for p in notebooks if p.name.startswith('exp_')]}
    used = {p for ps in groups.values() for p in ps} | {ROOT / 'nbs' / 'index.ipynb'}
    groups['The paper'] += [p for p in notebooks if p not in used]
    tocs = ''.join(f"\n```{{toctree}}\n:caption: {cap}\n:hidden:\n:maxdepth: 1\n\n"
                   + ''.join(f"{title(p)} <nbs/{p.stem}>\n" for p in ps) + "```\n" for cap, ps in groups.items() if ps)
    extra = ''.join(f"{n[:-3]}\n" for n in ('DEVELOPING.md', 'BENCHMARKS.md') if (ROOT / n).exists())
    tocs += f"\n```{{toctree}}\n:caption: Reference\n:hidden:\n:maxdepth: 1\n\napi/index\n{extra}```\n"
    (SRC / 'index.md').write_text(readme + '\n' + tocs)


def stage() -> list[Path]:
    "Write build/docs_src/ afresh; returns the staged notebooks' source paths."
    if SRC.exists(): shutil.rmtree(SRC)
    (SRC / 'nbs').mkdir(parents=True)
    notebooks = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if p.name != 'index.ipynb' and not p.name.endswith('.out.ipynb'))
    for p in notebooks: stage_notebook(p, SRC / 'nbs' / p.name)
    for p in (ROOT / 'nbs').rglob('*'):
        if p.is_file() and p.suffix.lower() in ASSET_SUFFIXES and '.ipynb_checkpoints' not in p.parts:
            dst = SRC / p.relative_to(ROOT); dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(p, dst)
    for name in ('DEVELOPING.md', 'BENCHMARKS.md'):
        if (ROOT / name).exists(): shutil.copy2(ROOT / name, SRC / name)
    api_pages(); home_page(notebooks)
    return notebooks


def build(out: Path = OUT, quiet: bool = True) -> Path:
    """Stage, run sphinx-build (html) into build/docs_html/ (MyST-NB keeps its scratch files beside it, in build/),
    then copy the site to `out`; returns `out / 'index.html'`."""
    stage()
    html = ROOT / 'build' / 'docs_html'
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-c', str(ROOT / 'docs'), '-d', str(ROOT / 'build' / 'docs_doctrees'),
           '-j', '1', str(SRC), str(html)] + (['-q'] if quiet else [])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sphinx-build failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if proc.stderr.strip(): print(proc.stderr.strip()[-4000:], file=sys.stderr)
    out = Path(out)
    if out.exists(): shutil.rmtree(out)
    shutil.copytree(html, out)
    return out / 'index.html'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', type=Path, default=OUT, help='output folder (default: _docs/)')
    ap.add_argument('--verbose', action='store_true', help="show sphinx-build's progress")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    index = build(a.out, quiet=not a.verbose)
    print(f"site built in {time.perf_counter() - t0:.0f} s: open {index} (works from the file system)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
