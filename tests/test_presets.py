"Presets: run identity that travels (packaged assets by name + content hash), the preset registry."
import shutil, subprocess, sys
from pathlib import Path

import pytest

from cps_repro.presets import preset, list_presets, register_preset
from cps_repro.packaged import asset_ref, resolve_asset, ASSETS_DIR

REPO = Path(__file__).resolve().parents[1]
_RUN_ID = "from cps_repro.presets import preset; print(preset('mini_cps', '1_16').run_id)"


def _run_id(package_parent: Path) -> str:
    env = {'PYTHONPATH': str(package_parent), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'}
    out = subprocess.run([sys.executable, '-c', _RUN_ID], cwd=package_parent, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_same_preset_has_the_same_run_id_in_two_copies_and_a_new_asset_changes_it(tmp_path):
    ignore = shutil.ignore_patterns('__pycache__')
    for k in ('a', 'b'): shutil.copytree(REPO / 'cps_repro', tmp_path / k / 'cps_repro', ignore=ignore)
    a, b = _run_id(tmp_path / 'a'), _run_id(tmp_path / 'b')
    assert a == b == preset('mini_cps', '1_16').run_id
    assert str(tmp_path) not in preset('mini_cps', '1_16').to_json()
    weights = tmp_path / 'b' / 'cps_repro' / 'assets' / 'small_resnet_s2_pretrained.pt'
    weights.write_bytes(weights.read_bytes() + b'regenerated')        # other content
    assert _run_id(tmp_path / 'b') != a


def test_an_asset_reference_refuses_other_content(tmp_path):
    (tmp_path / 'w.pt').write_bytes(b'one')
    ref = asset_ref('w.pt', tmp_path)
    assert resolve_asset(ref, tmp_path) == tmp_path / 'w.pt'
    (tmp_path / 'w.pt').write_bytes(b'two')
    with pytest.raises(ValueError, match='regenerated'): resolve_asset(ref, tmp_path)
    with pytest.raises(FileNotFoundError, match='missing.pt'): asset_ref('missing.pt', tmp_path)


def test_mini_pretrain_needs_an_output_path():
    from cps_repro.mini import main
    with pytest.raises(SystemExit): main(['pretrain'])


def test_preset_registry():
    assert 'mini_cps' in list_presets() and 'voc_cct_resnet101' in list_presets()
    with pytest.raises(ValueError, match='exists already'): register_preset('voc_cps', lambda split: None)
    with pytest.raises(ValueError, match='Unknown preset'): preset('voc_fixmatch')
