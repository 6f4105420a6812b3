"""The documentation site: built once by tools/build_docs.py into _docs/, then
- read as HTML: no paragraph holds a markdown table row (tables are tables), no cell output holds a warning, every
  local link and anchor resolves, the generated pages (Get started, Results) are there;
- opened from the file system in headless Chromium (Debian's `chromium`, installed here with apt-get when missing and
  possible; otherwise the browser test is skipped and says why): the home page's first screen holds the install and
  demo commands, chapters show their figures, the API and the paper's numbers are there. Screenshots of the pages
  checked land in _docs/_screenshots/."""
import json, re, sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import build_docs                                     # noqa: E402
from headless import Browser, install_chromium       # noqa: E402
import site_pages                                     # noqa: E402
from bs4 import BeautifulSoup                         # noqa: E402  (installed with nbconvert)

# Numbers printed in the paper (Table 1, PASCAL VOC, ResNet-50, CPS without CutMix at 1/16 and 1/8 labels)
PAPER_NUMBERS = ('68.21', '73.20')


def test_staged_notebooks_hide_nbdev_cells(tmp_path):
    nb = {'cells': [{'cell_type': 'markdown', 'source': '# Title\n\n> summary\n\n- skip_exec: true', 'metadata': {}},
                    {'cell_type': 'code', 'source': "x = 1", 'metadata': {'tags': ['injected-parameters']}, 'outputs': []},
                    {'cell_type': 'code', 'source': '#| default_exp losses', 'metadata': {}, 'outputs': []},
                    {'cell_type': 'code', 'source': '#| hide\nimport x', 'metadata': {}, 'outputs': []},
                    {'cell_type': 'code', 'source': '#| echo: false\nprint(1)', 'metadata': {}, 'outputs': []},
                    {'cell_type': 'code', 'source': '#| export\ndef f(): pass', 'metadata': {}, 'outputs': []}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / 'a.ipynb').write_text(json.dumps(nb))
    build_docs.stage_notebook(tmp_path / 'a.ipynb', tmp_path / 'b.ipynb')
    cells = json.loads((tmp_path / 'b.ipynb').read_text())['cells']
    assert [c['source'].split('\n')[0] for c in cells] == ['# Title', '#| echo: false', '#| export']
    assert cells[0]['source'] == '# Title\n\n> summary'            # nbdev's front matter is not shown as a bullet
    assert cells[1]['metadata']['tags'] == ['remove-input']       # papermill's injected values are left out
    assert 'losses' in build_docs.modules() and '_modidx' not in build_docs.modules()


@pytest.fixture(scope='module')
def site():
    "The site, built once for this module's tests: the folder holding index.html."
    return build_docs.build(ROOT / '_docs').parent


def _pages(site):
    return [p for p in sorted(site.rglob('*.html')) if not {'_static', '_screenshots'} & set(p.relative_to(site).parts)]


def _soup(path, cache={}):
    if path not in cache: cache[path] = BeautifulSoup(path.read_text(encoding='utf-8', errors='replace'), 'html.parser')
    return cache[path]


TABLE_ROW = re.compile(r'^\s*\|.*\|\s*$', re.M)        # `| a | b |`, as markdown writes a table row
WARNING = re.compile(r'\b[A-Z]\w*Warning\b|^\s*warnings\.warn\(', re.M)   # TqdmWarning, UserWarning, ...


def local_link_problems(site) -> list[str]:
    "Every href/src of every page that points into the site and does not resolve (file, or #anchor in the page)."
    problems = []
    for page in _pages(site):
        soup = _soup(page)
        for tag in soup.find_all(['a', 'img', 'link', 'script', 'source', 'iframe']):
            ref = tag.get('href') if tag.name in ('a', 'link') else tag.get('src')
            if not ref: continue
            u = urlsplit(ref)
            if u.scheme or ref.startswith('//'): continue
            target = (page.parent / unquote(u.path)).resolve() if u.path else page
            if target.is_dir(): target = target / 'index.html'
            where = f"{page.relative_to(site)}: {ref}"
            if not target.is_file(): problems.append(where); continue
            if u.fragment and target.suffix == '.html':
                frag = unquote(u.fragment)
                if not _soup(target).find(id=frag) and not _soup(target).find(attrs={'name': frag}): problems.append(where)
    return problems


def test_tables_render_as_tables(site):
    "Markdown tables (in cells and in outputs) are HTML tables: no paragraph holds a `| ... |` row."
    bad = [f"{p.relative_to(site)}: {para.get_text()[:80]!r}" for p in _pages(site)
           for para in _soup(p).select('article p, main p') if TABLE_ROW.search(para.get_text())]
    assert not bad, f"{len(bad)} paragraphs hold markdown table rows (nb_render_markdown_format in docs/conf.py?): {bad[:5]}"
    assert len(_soup(site / 'nbs' / '11_mini.html').find_all('table')) >= 10


def test_no_warning_in_cell_outputs(site):
    "No committed output shows a warning (TqdmWarning, UserWarning, ...): fix it where it comes from and re-execute."
    bad = [f"{p.relative_to(site)}: {WARNING.search(out.get_text()).group(0)}" for p in _pages(site)
           for out in _soup(p).select('.cell_output') if WARNING.search(out.get_text())]
    assert not bad, f"warnings in cell outputs: {bad}"


def test_every_local_link_resolves(site):
    problems = local_link_problems(site)
    assert not problems, f"{len(problems)} broken local links: {problems[:20]}"
    assert not any('cps-repro.github.io' in (a.get('href') or '') for p in _pages(site) for a in _soup(p).find_all('a')), \
        "a link to a documentation host that is not this site (the modules' 'Docs:' lines?)"


def test_download_button_offers_the_committed_notebook(site):
    links = [a.get('href') for a in _soup(site / 'nbs' / '05_losses.html').find_all('a') if (a.get('href') or '').endswith('.ipynb')]
    assert links, "05_losses has no .ipynb download link"
    target = (site / 'nbs' / links[0]).resolve()
    assert target.read_bytes() == (ROOT / 'nbs' / '05_losses.ipynb').read_bytes()


def test_api_pages_link_to_their_chapters_and_cover_methods(site):
    assert 'methods.cps' in build_docs.modules() and 'methods' in build_docs.modules()
    hrefs = [a.get('href') for a in _soup(site / 'api' / 'methods.cps.html').find_all('a')]
    assert '../nbs/14b_cps.html' in hrefs
    assert '../nbs/05_losses.html' in [a.get('href') for a in _soup(site / 'api' / 'losses.html').find_all('a')]


def test_generated_pages(site):
    "Get started holds the README's demo section; Results links each measured number to a result.json or CSV."
    started = _soup(site / 'get_started.html').get_text()
    assert 'make demo' in started and 'prepare_voc.py' in started and 'torchrun' in started
    results = _soup(site / 'results.html')
    numbers = [a for a in results.find_all('a') if re.fullmatch(r'\d+\.\d\d', a.get_text())]
    assert numbers and all(a.get('href').endswith(('result.json', '.csv')) for a in numbers)
    assert 'not run' in results.get_text()


def test_results_page_numbers_come_from_the_files(tmp_path):
    "The Results page's numbers are the CSV's, each linked to its run's result.json where one is committed."
    d = tmp_path / 'nbs' / 'mini_results' / 'data_seed3'; (d / 'run_results' / 'mini_cps_1_16_seed0_x').mkdir(parents=True)
    (d / 'run_results' / 'mini_cps_1_16_seed0_x' / 'result.json').write_text('{}')
    (d / 'mini_table.csv').write_text('method,split,seed,miou,n_labeled,iters,run_id\n'
                                      'cps,1_16,0,41.234,500,3000,mini_cps_1_16_seed0_x\ncps,1_16,1,43.0,500,3000,mini_cps_1_16_seed1_y\n')
    page = site_pages.results_markdown(site_root=tmp_path, mini=tmp_path / 'nbs' / 'mini_results')
    assert '[41.23](nbs/mini_results/data_seed3/run_results/mini_cps_1_16_seed0_x/result.json)' in page
    assert '[43.00](nbs/mini_results/data_seed3/mini_table.csv)' in page and '42.12 ± 1.25' in page
    assert 'Data seed 3' in page and '| 68.21 |' in page          # the paper's CPS at 1/16 (Table 1, R50) beside it


@pytest.fixture(scope='module')
def chromium():
    reasons = []
    exe = install_chromium(log=reasons.append)
    if exe is None: pytest.skip("no headless browser could be installed: " + '; '.join(reasons))
    return exe


def test_site_in_headless_chromium(chromium, site):
    shots = site / '_screenshots'
    url = lambda page: (site / page).resolve().as_uri()          # the site works from file://, no server
    imgs_js = ("Array.from(document.querySelectorAll('article img, main img'))"
               ".map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight}))")
    first_screen_js = ("Array.from(document.querySelectorAll('article pre, main pre'))"
                       ".filter(p => p.getBoundingClientRect().bottom <= window.innerHeight).map(p => p.innerText).join('\\n')")
    with Browser(chromium) as b:
        # the home page: the README, with the install and demo commands on its first screen, and links to the chapters
        b.open(url('index.html'))
        assert 'cps_repro' in b.evaluate('document.title')
        assert 'Cross Pseudo Supervision' in b.evaluate('document.body.innerText')
        first = b.evaluate(first_screen_js)
        assert 'pip install' in first and 'make demo' in first, f"the home page's first screen lacks the install and demo commands: {first!r}"
        links = b.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
        assert any(h and h.startswith('nbs/05_losses') for h in links), "no link from the home page to the 05_losses chapter"
        assert any(h and h.startswith('get_started') for h in links) and any(h and h.startswith('results') for h in links)
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

        # the paper tables page shows the paper's numbers, as tables
        b.open(url('nbs/paper_tables.html'))
        text = b.evaluate('document.body.innerText')
        missing = [n for n in PAPER_NUMBERS if n not in text]
        assert not missing, f"paper_tables page lacks the paper's numbers {missing}: execute nbs/paper_tables.ipynb (tools/execute_chapters.py)"
        assert b.evaluate("document.querySelectorAll('table').length") >= 3
        b.screenshot(shots / 'paper_tables.png')

        # the miniature's tables are tables on the page (not `| ... |` text)
        b.open(url('nbs/11_mini.html'))
        assert b.evaluate("document.querySelectorAll('article table').length") >= 10
        b.screenshot(shots / 'chapter_11_mini.png')
    assert sorted(p.name for p in shots.glob('*.png')) == ['api_losses.png', 'chapter_06_cutmix.png', 'chapter_11_mini.png',
                                                           'home.png', 'paper_tables.png']
