"""Every command the README and the Get started page (docs/get_started.md) show, run as written at tiny size in a fresh folder laid out like a clone (issue 12).

Commands are extracted from README.md's code blocks and inline code. Each is either run (the CPU ones, with tiny
sizes appended where the README's own sizes would take minutes), or, where it needs real data, a GPU or the network,
checked as far as that is possible here: its script or notebook exists, its arguments parse, every notebook parameter
it passes is one the notebook declares, and, run on this machine, it stops with a one-line message instead of a traceback."""
import json, os, re, shlex, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# the README and the site's Get started page (docs/get_started.md), which holds the steps the README links to
README = (REPO / 'README.md').read_text() + '\n' + (REPO / 'docs' / 'get_started.md').read_text()
STARTS = ('papermill ', 'cps-repro ', 'python data_scripts/', 'torchrun ', 'make ', 'mkdir ')


def readme_commands() -> list[str]:
    "Shell commands in the README: lines of fenced blocks and inline code spans that start with a known command."
    cmds = []
    for block in re.findall(r'```[a-z]*\n(.*?)```', README, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r'\s+#\s.*$', '', line).strip()
            if line.startswith(STARTS): cmds.append(line)
    for span in re.findall(r'`([^`\n]+)`', re.sub(r'```.*?```', '', README, flags=re.S)):
        if span.startswith(('papermill ', 'cps-repro ')) and len(span.split()) > 2: cmds.append(span.strip())
    return list(dict.fromkeys(cmds))


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_we_expect():
    assert len(COMMANDS) > 20
    assert any(c.startswith('mkdir -p runs') for c in COMMANDS)          # papermill needs its output folder
    assert all(not c.startswith('papermill') or c.split()[2].startswith('runs/') for c in COMMANDS)


@pytest.fixture(scope='module')
def clone(tmp_path_factory):
    "A folder laid out like a fresh clone: pyproject.toml and nbs/ (read-only use), no data, runs/ or results/."
    root = tmp_path_factory.mktemp('clone')
    shutil.copy(REPO / 'pyproject.toml', root / 'pyproject.toml')
    (root / 'nbs').symlink_to(REPO / 'nbs')
    (root / 'data_scripts').symlink_to(REPO / 'data_scripts')
    return root


def sh(cmd: str, cwd, timeout=600, extra=()) -> subprocess.CompletedProcess:
    "Run one README command (cps-repro via this interpreter, so the checkout under test is the one used)."
    argv = shlex.split(cmd) + list(extra)
    if argv[0] == 'cps-repro': argv = [sys.executable, '-m', 'cps_repro.cli', *argv[1:]]
    elif argv[0] == 'papermill': argv = [sys.executable, '-m', 'papermill', *argv[1:], '--no-progress-bar']
    elif argv[0] == 'python': argv = [sys.executable, *argv[1:]]
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def one_line_error(p: subprocess.CompletedProcess) -> bool:
    return p.returncode != 0 and 'Traceback' not in p.stderr and 'Traceback' not in p.stdout


def cmds(prefix): return [c for c in COMMANDS if c.startswith(prefix)]


def test_synthetic_data_walkthrough_runs_as_written(clone):
    "The README's generated-data commands, in order: synth, splits verify, data check, train."
    assert sh('mkdir -p runs', clone).returncode == 0 and (clone / 'runs').is_dir()
    (synth,) = [c for c in cmds('cps-repro synth') if '--n ' in c]
    from cps_repro.cli import build_parser
    for other in cmds('cps-repro synth'): build_parser().parse_args(shlex.split(other)[1:])   # the inline one parses
    p = sh(synth, clone, extra=['--n-val', '8', '--no-progress']); assert p.returncode == 0, p.stderr
    for c in cmds('cps-repro splits verify data/synthetic') + cmds('cps-repro data check --dataset voc --root data/synthetic'):
        p = sh(c, clone); assert p.returncode == 0, (c, p.stdout[-2000:], p.stderr[-2000:])
    (train,) = [c for c in cmds('cps-repro train --preset mini_cps --data-root data/synthetic')]
    p = sh(train, clone, extra=['--no-progress', '--set', 'workers=0']); assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(next((clone / 'results').glob('*/result.json')).read_text())
    assert res['config']['train']['iters'] == 20


def test_real_data_commands_without_the_data_give_one_line(clone):
    "prepare/fetch need the network and the real data: their arguments parse; verify/check say what is missing."
    for c in cmds('python data_scripts/'):
        argv = shlex.split(c)
        p = sh(f'python {argv[1]} --help', clone); assert p.returncode == 0
        for opt in (a for a in argv[2:] if a.startswith('--')): assert opt in p.stdout, (c, opt)
    gpu = cmds('cps-repro train --preset voc_cps_cutmix --split')          # the README's one-GPU command
    assert len(gpu) == 1
    for c in cmds('cps-repro splits verify data/voc') + cmds('cps-repro data check --dataset voc --root data/voc') + gpu:
        p = sh(c, clone); assert one_line_error(p), (c, p.stdout, p.stderr)
    from cps_repro.cli import build_parser
    for c in cmds('cps-repro splits fetch') + cmds('torchrun '):
        argv = shlex.split(c)
        argv = argv[argv.index('cps_repro.cli') + 1:] if 'cps_repro.cli' in argv else argv[1:]
        build_parser().parse_args(argv)                                   # parses as written


def test_paper_cells_stop_on_this_machine_with_a_message(clone):
    "Each paper cell's notebook exists and declares every parameter; one, run here, stops in seconds with a message."
    from papermill.translators import PythonTranslator
    params = {}
    for c in cmds('papermill '):
        argv = shlex.split(c)
        nb = REPO / argv[1]; assert nb.is_file(), c
        if nb not in params:
            cell = next(x for x in json.loads(nb.read_text())['cells'] if 'parameters' in x['metadata'].get('tags', []))
            params[nb] = {p.name for p in PythonTranslator.inspect({'source': ''.join(cell['source'])})}
        given = [argv[i + 1] for i, a in enumerate(argv) if a in ('-p', '-y', '-r')]
        names = [g if ':' not in g else g.split(':')[0] for g in given[::1] if g in params[nb] or ':' in g]
        for i, a in enumerate(argv):
            if a == '-p': assert argv[i + 1] in params[nb], (c, argv[i + 1])
    sh('mkdir -p runs', clone)
    first = cmds('papermill nbs/exp_voc.ipynb')[0]
    p = sh(first, clone, timeout=300)
    assert p.returncode != 0
    assert 'weights/resnet50_v1c.pth' in p.stderr or 'exp_mini' in p.stderr or 'No voc dataset' in p.stderr, p.stderr[-2000:]


def test_mini_commands_per_data_seed_do_not_overwrite_each_other(clone):
    "The README's fresh data-seed commands (two data seeds), at tiny size: two tables side by side (item 8)."
    tiny = ['-p', 'iters', '2', '-p', 'n_images', '128', '-y', 'seeds: [0]', '-p', 'workers', '1',
            '-y', "methods: ['supervised']"]
    sh('mkdir -p runs', clone)
    fresh = [c for c in cmds('papermill nbs/exp_mini.ipynb') if 'data_seed' in c]
    seeds = [int(re.search(r'-p data_seed (\d+)', c).group(1)) for c in fresh]
    assert len(seeds) == 2 and len(set(seeds)) == 2 and 0 not in seeds, seeds   # two fresh seeds, not the development one
    for c in fresh:
        p = sh(c, clone, extra=tiny); assert p.returncode == 0, p.stderr[-3000:]
    tables = sorted((clone / 'results' / 'mini').glob('data_seed*/mini_table.csv'))
    assert [t.parent.name for t in tables] == [f'data_seed{k}' for k in sorted(seeds)]
    assert not (clone / 'results' / 'mini' / 'mini_table.csv').exists()


def test_tables_and_figures_commands_run(clone):
    "paper_tables / paper_figures as the README writes them, on whatever runs the earlier tests left in results/."
    if not (clone / 'results').is_dir(): pytest.skip('no results from the earlier README commands')
    sh('mkdir -p runs', clone)
    for c in cmds('papermill nbs/paper_tables.ipynb') + cmds('papermill nbs/paper_figures.ipynb'):
        p = sh(c, clone); assert p.returncode == 0, (c, p.stderr[-3000:])
    assert (clone / 'reports' / 'table1.md').is_file()


def test_own_data_commands(clone):
    "Training on your own data: the mini recipe runs at tiny size; the paper recipe stops without its weights."
    root = clone / 'my_data'; (root / 'images').mkdir(parents=True, exist_ok=True); (root / 'masks').mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / 'images' / f'im{i}.png')
        Image.fromarray(rng.integers(0, 5, (32, 32), dtype=np.uint8)).save(root / 'masks' / f'im{i}.png')
    (root / 'labeled.txt').write_text('im0\nim1\nim2\nim3\n'); (root / 'unlabeled.txt').write_text('im4\nim5\n')
    (root / 'val.txt').write_text('im6\nim7\n')
    mini, paper = cmds('cps-repro train --preset mini_cps_cutmix --data-root my_data'), cmds('cps-repro train --preset voc_cps_cutmix --data-root my_data')
    assert len(mini) == len(paper) == 1
    p = sh(mini[0], clone, extra=['--out-dir', 'results_own', '--no-progress', '--set', 'iters=2', 'eval_every=2',
                                   'checkpoint_every=2', 'batch_size=2', 'workers=0'])
    assert p.returncode == 0, p.stderr[-3000:]
    p = sh(paper[0], clone)
    assert one_line_error(p) and 'weights/resnet50_v1c.pth' in p.stderr


def test_make_targets_exist():
    for c in cmds('make '):
        for target in re.findall(r'make (\w+)', c):
            p = subprocess.run(['make', '-n', target], cwd=REPO, capture_output=True, text=True)
            assert 'No rule to make target' not in p.stderr, target
