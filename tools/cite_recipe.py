#!/usr/bin/env python
"""Point the repository's citations at the recipe chapter (`nbs/recipe.ipynb`) instead of files outside it.

The chapters, DEVELOPING.md, the paper tables' SOURCE.md and the tests used to cite a recipe file, a notes file and
reference folders that only exist beside the developers' checkout. This tool rewrites those citations into
citations of the recipe chapter, which has the same section numbers ("recipe §N"; the notes became recipe §11):

- in markdown (markdown cells, `.md` files) as a link, `[recipe §N](recipe.ipynb)`, with the link target relative to
  the file; plain "recipe §N" citations outside code spans become links too;
- in code (code cells, `.py` files: comments, docstrings, messages) as plain text, "recipe §N".

It is idempotent, prints every change, and afterwards lists what it could not rewrite (exit status 1 if anything
is left, or if a cited "recipe §N" is not a heading of the chapter). Code that *reads* a reference folder (e.g.
`REPO.parent / 'shared'`) is not a citation and is left alone.

    python tools/cite_recipe.py            # rewrite in place
    python tools/cite_recipe.py --check    # change nothing; exit 1 if an external citation or a missing section remains
    python tools/cite_recipe.py --root DIR # work on another checkout (e.g. a temporary copy)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

CHAPTER = 'nbs/recipe.ipynb'
FINDINGS_SECTION = '11'          # the notes on the CPU miniature are the chapter's last section

# What still counts as an external citation once the rewrite is done (textual mentions only: `REPO.parent / 'shared'`
# does not match).
EXTERNAL = re.compile(r"cps_recipe\.md|mini-recipe-findings|\.\./shared\b|\bshared/(?:reference|notes)\b")

SEC = r'§\s?\d+(?:\.\d+)*'
SECS = rf'{SEC}(?:\s*(?:-|–|,|and)\s*{SEC})*'   # "§2", "§1-§6", "§2.2, §2.3"
_PATH = r'(?:\.\./)?(?:shared/)?(?:reference/|notes/)?'


def targets(root: Path) -> list[Path]:
    """The files this tool rewrites: the notebooks, DEVELOPING.md, the package's markdown files (the paper tables'
    SOURCE.md) and the tests."""
    files = sorted((root / 'nbs').glob('*.ipynb')) + [root / 'DEVELOPING.md'] + sorted((root / 'cps_repro').rglob('*.md'))
    files += sorted((root / 'tests').glob('*.py'))
    return [f for f in files if f.is_file() and f.relative_to(root).as_posix() != CHAPTER]


TEXT_SUFFIXES = {'.py', '.md', '.sh', '.toml', '.yml', '.yaml', '.txt', '.cfg', '.ini'}

def report_only(root: Path) -> list[Path]:
    """Files that are checked but not rewritten: generated ones (README.md from nbs/index.ipynb, cps_repro/*.py from
    the notebooks) and the rest of the repository's text files, which nobody cites the recipe from today."""
    me = Path(__file__).resolve()
    files = [root / n for n in ('README.md', 'BENCHMARKS.md', 'Makefile', 'pyproject.toml', 'environment.yml')]
    for folder in ('cps_repro', 'benchmarks', 'data_scripts', 'tools'):
        files += sorted(f for f in (root / folder).rglob('*') if f.suffix in TEXT_SUFFIXES and f.suffix != '.md')
    return [f for f in files if f.is_file() and f.resolve() != me]


def _sections(text: str) -> str:
    "'§1 - § 6' -> '§1-§6' (the citation's sections in a normal spelling)."
    text = re.sub(r'§\s+', '§', text)
    return re.sub(r'\s*([-–])\s*', r'\1', text)


def make_rules(link: str | None, titles: dict | None = None):
    """(pattern, replacement) pairs, applied in order. `link` is the chapter's path relative to the file, or None for
    code (plain text); `titles` maps lower-case heading titles of the chapter to their sections, so that the notes
    cited with a quoted title ("CutMix in the miniature") point at that subsection."""
    titles = titles or {}
    def cite(sections: str) -> str:
        return f'[recipe {sections}]({link})' if link else f'recipe {sections}'
    chapter = f'[the recipe chapter]({link})' if link else 'the recipe chapter'
    recipe_file = rf'`?{_PATH}cps_recipe\.md`?'
    findings_file = rf'`?{_PATH}mini-recipe-findings\.md`?'
    return [
        # phrases around reference folders (checked first, so that their paths do not reach the general rules)
        (re.compile(rf'recipe §6\s*/\s*{_PATH}partitions/README\.md'), lambda m: 'recipe §6'),
        (re.compile(r'\(`?(?:\.\./)?shared[\w/]*`?\s+beside\s+the\s+repository\)'),
         lambda m: '(a developer-only folder outside the repository)'),
        (re.compile(r'\(`?(?:\.\./)?shared/reference/paper_tables/?`?,\s+described in\s+'), lambda m: '(described in '),
        (re.compile(r'`?\.\./shared/reference/partitions`? is not present'),
         lambda m: 'the reference copy of the official lists (outside the repository) is not present'),
        (re.compile(r'`?\.\./shared/reference/paper_tables`? is not present'),
         lambda m: 'the reference copy of the paper tables (outside the repository) is not present'),
        (re.compile(r'`?\.\./shared`? is not present'), lambda m: 'the reference-data folder beside the repository is not present'),
        (re.compile(r'no `?\.\./shared`? needed'), lambda m: 'no reference data needed'),
        (re.compile(r'`?\.\./shared`? folder \(reference data\)'), lambda m: 'reference-data folder beside the repository'),
        (re.compile(r'`?\.\./shared`? folder'), lambda m: 'reference-data folder outside the repository'),
        (re.compile(r'Tests that need `?\.\./shared`?'), lambda m: 'Tests that need the reference data outside the repository'),
        (re.compile(r'cite `cps_recipe\.md` sections'),
         lambda m: f'cite the sections of {chapter} as "recipe §N"'),
        # the notes on the miniature -> recipe §11, or its subsection when a quoted title follows
        (re.compile(rf'{findings_file}(,\s*"([^"\n]+)")?'),
         lambda m: cite('§' + titles.get((m.group(2) or '').lower(), FINDINGS_SECTION)) + (m.group(1) or '')),
        (re.compile(r'\bthe findings notes\b'), lambda m: cite('§' + FINDINGS_SECTION)),
        # the recipe file, with or without sections
        (re.compile(rf'{recipe_file}\s*({SECS})'), lambda m: cite(_sections(m.group(1)))),
        (re.compile(rf'{recipe_file}'), lambda m: chapter),
        # remaining paths of reference files that the chapter now holds
        (re.compile(rf'`?{_PATH}partitions/README\.md`?'), lambda m: cite('§6')),
        (re.compile(r'`?(?:\.\./)?shared/reference/paper_tables/?`?'), lambda m: 'the reference copy of the paper tables'),
    ]


_CODE_SPAN = re.compile(r'```.*?```|`[^`\n]*`', re.S)
_PLAIN = re.compile(rf'(?<!\[)\b([Rr]ecipe)\s({SECS})(?!\]\()')


def link_plain(text: str, link: str) -> str:
    "In markdown, turn plain 'recipe §N' outside code spans into links (already linked ones are left alone)."
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_PLAIN.sub(lambda p: f'[{p.group(1)} {_sections(p.group(2))}]({link})', text[pos:m.start()]))
        out.append(m.group(0)); pos = m.end()
    out.append(_PLAIN.sub(lambda p: f'[{p.group(1)} {_sections(p.group(2))}]({link})', text[pos:]))
    return ''.join(out)


def rewrite(text: str, link: str | None, titles: dict | None = None) -> str:
    for pattern, repl in make_rules(link, titles): text = pattern.sub(repl, text)
    if link: text = link_plain(text, link)
    return text


def _chapter_link(root: Path, file: Path) -> str:
    return Path(os.path.relpath(root / CHAPTER, file.parent)).as_posix()


def units(file: Path):
    """Yield (where, text, is_markdown) for each rewritable piece of a file: the cells of a notebook, or the whole
    file."""
    if file.suffix == '.ipynb':
        nb = json.loads(file.read_text(encoding='utf-8'))
        for i, cell in enumerate(nb['cells']):
            yield f"cell {cell.get('id', i)}", ''.join(cell['source']), cell['cell_type'] == 'markdown'
    else:
        yield None, file.read_text(encoding='utf-8'), file.suffix == '.md'


def _show(old: str, new: str) -> str:
    "The changed lines, old and new."
    o, n = old.splitlines(), new.splitlines()
    pairs = [(a, b) for a, b in zip(o, n) if a != b] if len(o) == len(n) else [('\n'.join(o), '\n'.join(n))]
    return '\n'.join(f"    - {a.strip()}\n    + {b.strip()}" for a, b in pairs)


def process(root: Path, file: Path, write: bool, titles: dict | None = None) -> int:
    "Rewrite one file (if `write`), printing each change; return the number of pieces changed."
    link = _chapter_link(root, file)
    changed = 0
    if file.suffix == '.ipynb':
        raw = file.read_text(encoding='utf-8')
        nb = json.loads(raw)
        for i, cell in enumerate(nb['cells']):
            old = ''.join(cell['source'])
            new = rewrite(old, link if cell['cell_type'] == 'markdown' else None, titles)
            if new != old:
                changed += 1
                print(f"{file.relative_to(root)} (cell {cell.get('id', i)}):\n{_show(old, new)}")
                cell['source'] = new.splitlines(keepends=True)
        if changed and write: file.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    else:
        old = file.read_text(encoding='utf-8')
        new = rewrite(old, link if file.suffix == '.md' else None, titles)
        if new != old:
            changed = 1
            print(f"{file.relative_to(root)}:\n{_show(old, new)}")
            if write: file.write_text(new, encoding='utf-8')
    return changed


def chapter_headings(root: Path) -> dict[str, str]:
    "The recipe chapter's numbered headings, section -> title ('## §4 Optimisation ...' -> {'4': 'Optimisation ...'})."
    path = root / CHAPTER
    if not path.is_file(): return {}
    heads = {}
    for cell in json.loads(path.read_text(encoding='utf-8'))['cells']:
        if cell['cell_type'] != 'markdown': continue
        heads.update(re.findall(r'^#{1,6}\s+§(\d+(?:\.\d+)*)\s+(.*?)\s*$', ''.join(cell['source']), re.M))
    return heads


def chapter_sections(root: Path) -> set[str]:
    "Section numbers that are headings of the recipe chapter."
    return set(chapter_headings(root))


_CITED = re.compile(rf"[Rr]ecipe\b[^§\n]{{0,25}}?({SECS})")


def problems(root: Path, files, hint: str = '') -> list[str]:
    "External citations left, and cited recipe sections that are not headings of the chapter."
    out = []
    heads = chapter_sections(root)
    for file in files:
        rel = file.relative_to(root)
        for where, text, _ in units(file):
            at = f"{rel}" + (f" ({where})" if where else '')
            for n, line in enumerate(text.splitlines(), 1):
                if EXTERNAL.search(line): out.append(f"{at}:{n}: external citation{hint}: {line.strip()}")
                for run in _CITED.findall(line):
                    for sec in re.findall(r'§\s?(\d+(?:\.\d+)*)', run):
                        if heads and sec not in heads:
                            out.append(f"{at}:{n}: cites recipe §{sec}, which is not a heading of {CHAPTER}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true', help='change nothing; exit 1 if an external citation remains')
    ap.add_argument('--root', default=Path(__file__).resolve().parents[1], type=Path, help='repository root')
    args = ap.parse_args(argv)
    root = args.root.resolve()
    files = targets(root)
    titles = {title.lower(): sec for sec, title in chapter_headings(root).items()}
    n = sum(process(root, f, write=not args.check, titles=titles) for f in files)
    print(f"{'would change' if args.check else 'changed'} {n} cell(s)/file(s) in {len(files)} files")
    left = [] if chapter_sections(root) else [f"{CHAPTER}: missing, or without '## §N ...' headings"]
    left += problems(root, files) + problems(root, report_only(root), hint=' (not rewritten by this tool: a generated '
                                                                          'file is fixed by regenerating it)')
    for p in left: print(p)
    print(f"{len(left)} problem(s) left" if left else "no external citation left; every cited recipe section exists")
    return 1 if left else 0


if __name__ == '__main__':
    sys.exit(main())
