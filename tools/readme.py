"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed everywhere).

Markdown cells are copied as they are, except that relative image paths (written from nbs/) get the prefix nbs/;
code cells become ```python blocks, followed by their text outputs.
`python tools/readme.py --check` exits 1 when README.md is not what the notebook produces.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"


def _text(src): return ''.join(src) if isinstance(src, list) else src


def _from_root(markdown):
    "Relative image paths of a notebook in nbs/ as seen from the repository root, where README.md lives."
    return re.sub(r'(!\[[^\]]*\]\()(?!https?:|/|#)([^)\s]+)', r'\1nbs/\2', markdown)


def _outputs(cell):
    "The cell's outputs as `(is_markdown, text)` pairs: markdown displays apart from plain text and streams."
    parts = []
    for out in cell.get('outputs', []):
        if out.get('output_type') == 'stream': parts.append((False, _text(out['text'])))
        elif 'data' in out:
            data = out['data']
            if 'text/markdown' in data: parts.append((True, _text(data['text/markdown']).strip() + '\n'))
            elif 'text/plain' in data: parts.append((False, _text(data['text/plain']) + '\n'))
    return parts


def render(nb_path=ROOT / 'nbs' / 'index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    blocks = []
    for cell in nb['cells']:
        src = _text(cell['source']).strip()
        if not src or src.startswith('#| hide'): continue
        if cell['cell_type'] == 'markdown': blocks.append(_from_root(src))
        elif cell['cell_type'] == 'code':
            lines = src.splitlines()
            hidden = any(l.replace(' ', '') == '#|echo:false' for l in lines)
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
            if not hidden and code: blocks.append(f"```python\n{code}\n```")
            for is_markdown, out in _outputs(cell):
                out = out.rstrip()
                if out: blocks.append(out if is_markdown or out.lstrip().startswith(('|', '<', '!')) else f"```\n{out}\n```")
    return HEADER + '\n\n'.join(blocks) + '\n'


if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        sys.exit(0 if readme.exists() and readme.read_text() == text else 1)
    readme.write_text(text)
