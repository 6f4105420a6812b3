"""Every chapter (nbs/*.ipynb except the exp_* templates) is committed executed, and its outputs are still those of a
fresh execution (tools/execute_chapters.py: text equal up to durations, figures within a pixel tolerance).
A failure names the cells that changed; the fix is `python tools/execute_chapters.py nbs/<chapter>.ipynb`."""
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import execute_chapters as ec          # noqa: E402


def test_the_tool_covers_the_book_but_not_the_templates():
    names = [p.name for p in ec.default_notebooks()]
    assert '05_losses.ipynb' in names and 'paper_tables.ipynb' in names and 'index.ipynb' in names
    assert not [n for n in names if n.startswith('exp_')]


def test_stabilize_and_compare(tmp_path):
    cell = nbformat.v4.new_code_cell('x')
    cell.outputs = [nbformat.v4.new_output('stream', name='stderr', text='50%|#####     | 5/10 [00:01<00:01]\r'),
                    nbformat.v4.new_output('stream', name='stdout', text=f'run in {ec.ROOT}/nbs/x took 3.2 s\n'),
                    nbformat.v4.new_output('stream', name='stdout', text=f'<object at 0x7f3a2b1c9d80> {tmp_path}/a.png\n')]
    ec.stabilize(cell, [str(tmp_path.parent)])
    assert [o['name'] for o in cell.outputs] == ['stdout']
    assert cell.outputs[0]['text'] == 'run in x took 3.2 s\n<object> <tmp>/a.png\n'
    other = nbformat.v4.new_code_cell('x'); other.outputs = [nbformat.v4.new_output('stream', name='stdout', text='run in x took 9 s\n<object> <tmp>/a.png\n')]
    a, b = nbformat.v4.new_notebook(cells=[cell]), nbformat.v4.new_notebook(cells=[other])
    assert ec.compare(a, b, 2.0) == []                                # durations are masked
    other.outputs[0]['text'] = 'run in y took 9 s\n<object> <tmp>/a.png\n'
    assert 'differs' in ec.compare(a, b, 2.0)[0]
    empty = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x')])
    assert 'has no outputs' in ec.compare(empty, b, 2.0)[0]


def test_temporary_folders_are_masked_but_what_follows_stays(tmp_path):
    "Only the temporary folder's random name becomes <tmp>: the path inside it, backticks and commas stay (issue 27)."
    d = tmp_path / 'reports_x1y2'
    text = (f"table1 -> {d}/table1.md, {d}/table1.tex\n"
            f"run `cps-repro splits fetch {d}/voc` first; see {d}.\n")
    assert ec._sanitize_text(text, [str(tmp_path)]) == ("table1 -> <tmp>/table1.md, <tmp>/table1.tex\n"
                                                        "run `cps-repro splits fetch <tmp>/voc` first; see <tmp>.\n")


def test_skipped_cells_follow_nbdev_test():
    flags = ('notest', 'slow', 'cuda')
    assert ec.skipped(nbformat.v4.new_code_cell('#| slow\nx = 1'), flags)
    assert ec.skipped(nbformat.v4.new_code_cell('#| eval: false\nx = 1'), flags)
    assert not ec.skipped(nbformat.v4.new_code_cell('#| export\nx = 1'), flags)


@pytest.mark.slow
@pytest.mark.parametrize('path', ec.default_notebooks(), ids=lambda p: p.stem)
def test_chapter_is_committed_executed_and_current(path):
    committed = nbformat.read(path, as_version=4)
    assert any(c.get('outputs') for c in committed.cells if c.cell_type == 'code'), \
        f"{path.name} is committed without outputs: run `python tools/execute_chapters.py nbs/{path.name}` and commit it"
    problems = ec.compare(committed, ec._cleaned(ec.execute(path)), 2.0)
    assert not problems, (f"{path.name}: committed outputs differ from a fresh execution; run "
                          f"`python tools/execute_chapters.py nbs/{path.name}` and commit it:\n  " + '\n  '.join(problems[:10]))
