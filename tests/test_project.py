"Packaging and repository hygiene: what `make test` promises beyond the library's behaviour."
import json, re, subprocess, sys, tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {'pytorch': 'torch'}


def _name(req: str) -> str:
    return re.split(r'[<>=!~\[ ;]', req.strip(), maxsplit=1)[0].lower().replace('_', '-')


def _pyproject():
    return tomllib.loads((REPO / 'pyproject.toml').read_text())


def _conda_packages():
    names, in_deps = set(), False
    for line in (REPO / 'environment.yml').read_text().splitlines():
        s = line.split('#')[0].rstrip()
        if s.startswith('dependencies:'): in_deps = True; continue
        m = re.match(r'^\s*-\s+(\S+)', s)
        if in_deps and m and not m.group(1).startswith(('pip', '-e', 'python')):
            n = _name(m.group(1)); names.add(CONDA_NAMES.get(n, n))
    return names


def test_environment_yml_lists_the_same_packages_as_pyproject():
    proj = _pyproject()['project']
    pip_names = {_name(r) for r in proj['dependencies'] + proj['optional-dependencies']['dev']}
    assert _conda_packages() == pip_names


def test_dependencies_are_ranges_not_pins():
    proj = _pyproject()['project']
    for req in proj['dependencies'] + proj['optional-dependencies']['dev']:
        assert '==' not in req, f"{req} is pinned; use a version range"


def test_nbdev_settings_keep_parameters_tags_and_test_flags():
    nb = _pyproject()['tool']['nbdev']
    assert nb['allowed_cell_metadata_keys'] == ['tags']
    assert set(nb['tst_flags'].split()) == {'notest', 'slow', 'cuda'}
    assert _pyproject()['project']['scripts']['cps-repro'] == 'cps_repro.console:run'   # Ctrl-C while starting: one line


def test_readme_is_generated_from_index_notebook():
    r = subprocess.run([sys.executable, str(REPO / 'tools' / 'readme.py'), '--check'])
    assert r.returncode == 0, "README.md differs from nbs/index.ipynb: run `python tools/readme.py` (make export)"


def test_every_experiment_notebook_keeps_its_parameters_cell():
    for nb_path in sorted((REPO / 'nbs').glob('exp_*.ipynb')):
        nb = json.loads(nb_path.read_text())
        tagged = [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(tagged) == 1, f"{nb_path.name} must have exactly one cell tagged 'parameters'"


def test_ci_runs_the_readme_test_command():
    assert 'make test' in (REPO / '.ci' / 'run').read_text()
    assert 'make test' in (REPO / 'README.md').read_text()


def test_no_official_partition_list_is_committed():
    tracked = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True).stdout.split()
    offenders = [p for p in tracked if re.search(r'(train_aug_(un)?labeled|pseudoseg_(un)?labeled)_1-\d+\.txt$|config_new/', p)]
    assert not offenders, f"official partition lists must not be committed: {offenders}"


def test_jupyterlab_comes_with_the_dev_extras_and_the_conda_environment():
    "The README says `make venv && .venv/bin/jupyter lab nbs/`: JupyterLab must be installed by both (issue 12, item 2)."
    assert 'jupyterlab' in {_name(r) for r in _pyproject()['project']['optional-dependencies']['dev']}
    assert 'jupyterlab' in _conda_packages()
    assert '.venv/bin/jupyter lab' in (REPO / 'README.md').read_text()


def test_jupyter_lab_starts_from_the_environment():
    "`jupyter lab` after `make venv` (skipped where the running environment lacks it)."
    import shutil
    exe = Path(sys.executable).parent / 'jupyter-lab'
    if not exe.exists(): import pytest; pytest.skip('jupyterlab is not installed in this environment')
    out = subprocess.run([str(exe), '--version'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().startswith('4.')


def test_no_citation_of_files_outside_the_repository():
    "Every 'recipe §N' points to the recipe chapter; nothing cites a document a user's clone does not have."
    r = subprocess.run([sys.executable, str(REPO / 'tools/cite_recipe.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_import_layers_contract_is_declared_and_kept():
    "The import-linter layers contract lives in pyproject.toml and holds (an upward import fails with its name)."
    cfg = tomllib.loads((REPO / 'pyproject.toml').read_text())
    contracts = cfg['tool']['importlinter']['contracts']
    assert any(c['type'] == 'layers' for c in contracts) and not any(c.get('ignore_imports') for c in contracts)
    exe = Path(sys.executable).parent / 'lint-imports'
    r = subprocess.run([str(exe)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and 'broken' in r.stdout and '0 broken' in r.stdout, r.stdout[-3000:]


def test_make_browser_waits_for_the_dpkg_lock():
    "`make browser` runs apt-get, which fails at once when another process holds the dpkg lock: it must wait instead."
    make = (REPO / 'Makefile').read_text()
    target = make.split('\nbrowser:', 1)[1].split('\n\n', 1)[0]
    calls = re.findall(r'apt-get [^;&|>]*(?:update|install)[^;&|>]*', target)
    assert len(calls) == 2 and all('-o DPkg::Lock::Timeout=' in c for c in calls), calls


def test_library_hygiene_no_mutable_default_and_no_silent_fallback(monkeypatch):
    "Issue 26: `dist_info: DistInfo = DistInfo()` was a mutable default; report.py swallowed TypeError/AttributeError."
    import inspect
    import pytest
    from cps_repro import report
    from cps_repro.train import build_data
    assert inspect.signature(build_data).parameters['dist_info'].default is None
    def broken(package): raise TypeError('a bug in the resource lookup')
    monkeypatch.setattr(report.resources, 'files', broken)
    with pytest.raises(TypeError, match='a bug'): report._paper_csv_text(sorted(report.PAPER_TABLE_FILES.values())[0])
