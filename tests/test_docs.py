"""The documentation site: built by tools/build_docs.py into _docs/ and opened from the file system in headless
Chromium (Debian's `chromium`, installed here with apt-get when missing and possible; otherwise the test is skipped
and says why). Screenshots of the four pages checked land in _docs/_screenshots/."""
import json, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import build_docs                                     # noqa: E402
from headless import Browser, install_chromium       # noqa: E402

# Numbers printed in the paper (Table 1, PASCAL VOC, ResNet-50, CPS without CutMix at 1/16 and 1/8 labels)
PAPER_NUMBERS = ('68.21', '73.20')


def test_staged_notebooks_hide_nbdev_cells(tmp_path):
    nb = {'cells': [{'cell_type': 'code', 'source': '#| default_exp losses', 'metadata': {}, 'outputs': []},
                    {'cell_type': 'code', 'source': '#| hide\nimport x', 'metadata': {}, 'outputs': []},
                    {'cell_type': 'code', 'source': '#| echo: false\nprint(1)', 'metadata': {}, 'outputs': []},
                    {'cell_type': 'code', 'source': '#| export\ndef f(): pass', 'metadata': {}, 'outputs': []}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / 'a.ipynb').write_text(json.dumps(nb))
    build_docs.stage_notebook(tmp_path / 'a.ipynb', tmp_path / 'b.ipynb')
    cells = json.loads((tmp_path / 'b.ipynb').read_text())['cells']
    assert [c['source'].split('\n')[0] for c in cells] == ['#| echo: false', '#| export']
    assert cells[0]['metadata']['tags'] == ['remove-input']
    assert 'losses' in build_docs.modules() and '_modidx' not in build_docs.modules()


@pytest.fixture(scope='module')
def chromium():
    reasons = []
    exe = install_chromium(log=reasons.append)
    if exe is None: pytest.skip("no headless browser could be installed: " + '; '.join(reasons))
    return exe


def test_site_in_headless_chromium(chromium):
    site = ROOT / '_docs'
    build_docs.build(site)
    shots = site / '_screenshots'
    url = lambda page: (site / page).resolve().as_uri()          # the site works from file://, no server
    imgs_js = ("Array.from(document.querySelectorAll('article img, main img'))"
               ".map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight}))")
    with Browser(chromium) as b:
        # the home page: the README, with links to the chapters
        b.open(url('index.html'))
        assert 'cps_repro' in b.evaluate('document.title')
        assert 'Cross Pseudo Supervision' in b.evaluate('document.body.innerText')
        links = b.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
        assert any(h and h.startswith('nbs/05_losses') for h in links), "no link from the home page to the 05_losses chapter"
        b.screenshot(shots / 'home.png')

        # a chapter with its figures loaded (decoded images have a natural size)
        b.open(url('nbs/06_cutmix.html'))
        imgs = b.evaluate(imgs_js)
        assert len(imgs) >= 3, f"06_cutmix shows {len(imgs)} figures; expected its executed outputs (python tools/execute_chapters.py)"
        broken = [i['src'] for i in imgs if not (i['w'] > 0 and i['h'] > 0)]
        assert not broken, f"figures that did not load: {broken}"
        b.screenshot(shots / 'chapter_06_cutmix.png', full_page=True)

        # the API reference of cps_repro.losses, from the docstrings
        b.open(url('api/losses.html'))
        assert b.evaluate("!!document.getElementById('cps_repro.losses.cps_loss')"), "cps_loss is not documented on api/losses.html"
        text = b.evaluate('document.body.innerText')
        assert 'ohem_cross_entropy' in text and 'pseudo label' in text.lower()
        b.screenshot(shots / 'api_losses.png')

        # the paper tables page shows the paper's numbers
        b.open(url('nbs/paper_tables.html'))
        text = b.evaluate('document.body.innerText')
        missing = [n for n in PAPER_NUMBERS if n not in text]
        assert not missing, f"paper_tables page lacks the paper's numbers {missing}: execute nbs/paper_tables.ipynb (tools/execute_chapters.py)"
        assert b.evaluate("document.querySelectorAll('table').length") >= 3
        b.screenshot(shots / 'paper_tables.png')
    assert sorted(p.name for p in shots.glob('*.png')) == ['api_losses.png', 'chapter_06_cutmix.png', 'home.png', 'paper_tables.png']
