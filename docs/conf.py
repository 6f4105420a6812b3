"""Sphinx configuration of the cps_repro book (`make docs`, or `python tools/build_docs.py`).

Sphinx + MyST-NB + sphinx-book-theme (the stack of Jupyter Book): MyST-NB renders the committed, executed notebooks
as they are (`nb_execution_mode = "off"`: building the site never runs a chapter or trains anything), autodoc
writes the API reference from the docstrings, and the output is static HTML that works from the file system.
tools/build_docs.py stages the sources (README as the home page, nbs/, API pages) into build/docs_src/ first.
"""
import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('OMP_NUM_THREADS', '1')

import cps_repro

project = 'cps_repro'
author = 'cps_repro developers'
copyright = 'cps_repro developers'
version = release = cps_repro.__version__

extensions = ['myst_nb', 'sphinx.ext.autodoc']
source_suffix = {'.md': 'myst-nb', '.ipynb': 'myst-nb'}
exclude_patterns = ['**.ipynb_checkpoints', '**/*.out.ipynb']

nb_execution_mode = 'off'                 # render the committed outputs; never execute
nb_merge_streams = True
nb_render_markdown_format = 'gfm'         # markdown outputs (the results tables) as GitHub markdown: tables are tables
myst_enable_extensions = ['dollarmath', 'colon_fence']
myst_heading_anchors = 3
suppress_warnings = ['myst.header', 'myst.xref_missing', 'mystnb.unknown_mime_type', 'misc.highlighting_failure']

autodoc_default_options = {'members': True, 'show-inheritance': False}
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
add_module_names = False
default_role = 'code'                     # docstrings write `name` for code, as in the notebooks

html_theme = 'sphinx_book_theme'
html_title = f'cps_repro {release}'
html_theme_options = {'show_toc_level': 2, 'home_page_in_toc': True, 'use_download_button': True,
                      'repository_url': 'https://github.com/cps-repro/cps_repro', 'use_repository_button': False}
html_last_updated_fmt = None
html_copy_source = True                   # the theme's download button offers _sources/<page>; tools/build_docs.py puts
html_sourcelink_suffix = ''               # the committed notebook itself there (nbs/XX.ipynb), not the staged copy
html_show_sourcelink = False
