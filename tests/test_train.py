"The trainer: methods end to end, exact resume after SIGKILL, DDP equivalence, optimisation details, guards."
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from cps_repro.overrides import apply_overrides
from cps_repro.presets import preset
import dataclasses
from cps_repro.methods import method_names
from cps_repro.train import (Trainer, train, param_groups, poly_factor, NonFiniteLossError, setup_distributed,
                             build_networks)
from cps_repro.synthetic import synthesize
from cps_repro.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth') / 'voc'
    synthesize(root, layout='voc', n=64, n_val=8, seed=3, size=32, progress=False, border_ignore=0)
    return root


def tiny(data_root, method='cps', **kw):
    over = {'data_root': str(data_root), 'iters': 4, 'batch_size': 2, 'eval_every': 2, 'checkpoint_every': 2,
            'log_every': 1, 'workers': 0, **kw}
    return apply_overrides(preset(f'mini_{method}', '1_4'), over)


class PixelNet(nn.Module):
    "A BN-free two-layer conv net: its gradients do not depend on how a batch is split."
    def __init__(self, seed, classes=5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, classes, 1)
        with torch.no_grad():
            for p in self.parameters(): p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    def forward(self, x): return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize('method', ['cps', 'cps_cutmix', 'mean_teacher', 'self_training', 'supervised'])
def test_each_method_trains_and_writes_a_valid_result(data_root, tmp_path, method):
    kw = {}
    if method == 'self_training':   # the offline baseline needs a finished supervised run as its teacher
        train(tiny(data_root, 'supervised'), out_dir=tmp_path / 'teacher', progress=False)
        kw['teacher_checkpoint'] = str(tmp_path / 'teacher' / tiny(data_root, 'supervised').run_id / 'checkpoint.pt')
    r = train(tiny(data_root, method, **kw), out_dir=tmp_path, progress=False)
    run_dir = tmp_path / tiny(data_root, method, **kw).run_id
    saved = json.loads((run_dir / 'result.json').read_text())
    assert len(list((run_dir / 'predictions').glob('*.png'))) == 8
    assert saved == r
    for key in ('dataset', 'split', 'n_labeled', 'n_unlabeled', 'backbone', 'method', 'seed', 'iters', 'miou',
                'per_class_iou', 'eval', 'wall_seconds', 'device', 'package_version', 'git_commit', 'config',
                'best_miou', 'best_iter'):
        assert key in r, key
    assert (r['dataset'], r['split'], r['method'], r['iters'], r['backbone']) == ('voc', '1_4', method, 4, 'small_resnet_s2')   # the mini presets' backbone
    assert 0 <= r['miou'] <= 100 and len(r['per_class_iou']) == 5
    assert 'NaN' not in (run_dir / 'result.json').read_text()
    assert r['n_labeled'] == 16 and r['n_unlabeled'] == (0 if method == 'supervised' else 48)
    assert r['miou'] == r['history'][-1]['miou'] and r['best_miou'] >= r['miou']
    assert (r['miou_net2'] is not None) == (method != 'supervised')


def test_cli_train_writes_tensorboard_and_result(data_root, tmp_path, capsys):
    code = cli_main(['train', '--preset', 'mini_cps_cutmix', '--split', '1-4', '--data-root', str(data_root),
                     '--out-dir', str(tmp_path), '--no-progress', '--set', 'iters=2', 'batch_size=2', 'eval_every=2',
                     'checkpoint_every=2', 'workers=0'])
    assert code == 0
    run = next(tmp_path.iterdir())
    assert (run / 'result.json').exists() and any((run / 'tb').iterdir())
    assert 'mIoU' in capsys.readouterr().out


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = cli_main(['train', '--preset', 'mini_cps', '--data-root', str(tmp_path / 'nowhere'), '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and 'nowhere' in err and 'synth' in err


def _cli(data_root, out, iters=12):
    return [sys.executable, '-m', 'cps_repro.cli', 'train', '--preset', 'mini_cps_cutmix', '--split', '1_4',
            '--data-root', str(data_root), '--out-dir', str(out), '--no-progress',
            '--set', f'iters={iters}', 'batch_size=2', 'checkpoint_every=3', 'eval_every=6', 'log_every=1', 'workers=0']


def _net_state(run_dir):
    return torch.load(run_dir / 'checkpoint.pt', weights_only=False)['nets']


def test_sigkill_then_resume_is_bit_identical(data_root, tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    subprocess.run(_cli(data_root, tmp_path / 'full'), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_cli(data_root, tmp_path / 'killed'), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        runs = list((tmp_path / 'killed').glob('*/metrics.jsonl'))
        if runs and sum(1 for l in runs[0].read_text().splitlines() if 'loss/total' in l) >= 7:
            metrics = runs[0]; break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert metrics is not None, 'the run did not get to iteration 7'
    assert not (metrics.parent / 'result.json').exists(), 'killed too late to test resuming'
    subprocess.run(_cli(data_root, tmp_path / 'killed'), check=True, env=env, capture_output=True)
    full, resumed = next((tmp_path / 'full').iterdir()), next((tmp_path / 'killed').iterdir())
    for a, b in zip(_net_state(full), _net_state(resumed)):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    rf, rr = (json.loads((d / 'result.json').read_text()) for d in (full, resumed))
    assert rf['miou'] == rr['miou'] and rf['per_class_iou'] == rr['per_class_iou']
    lines = [json.loads(l) for l in (resumed / 'metrics.jsonl').read_text().splitlines()]
    assert [l['iter'] for l in lines if 'loss/total' in l] == list(range(1, 13)), 'metrics lost or duplicated on resume'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_json, out, bucket_mb=None):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from cps_repro.config import ExperimentConfig
    cfg = ExperimentConfig.from_json(cfg_json)
    info = setup_distributed('cpu')
    if bucket_mb is not None: Trainer.ddp_bucket_mb = bucket_mb   # one bucket per tensor: several all-reduces from the hooks
    tr = Trainer(cfg, run_dir=Path(out) / 'ddp', dist_info=info, nets=[PixelNet(1), PixelNet(2)], progress=False)
    assert all(isinstance(tr.forward_nets[k].ddp, torch.nn.parallel.DistributedDataParallel) for k in tr.method.trained)
    for _ in range(3): tr.step()
    if rank == 0: torch.save([n.state_dict() for n in tr.nets], Path(out) / 'ddp.pt')
    torch.distributed.barrier()                 # no rank tears gloo down while the other still talks to it
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize('bucket_mb,backward,balance,accum', [(None, 'total', 0.0, 1), (None, 'total', 0.5, 1),
                                                              (1e-6, 'total', 0.5, 1), (1e-6, 'per_term', 0.5, 1),
                                                              (None, 'total', 0.0, 2), (1e-6, 'per_term', 0.0, 2)])
def test_ddp_two_processes_equal_one_process_on_the_combined_batch(data_root, tmp_path, bucket_mb, backward, balance, accum):
    # PixelNet has no batch norm, so splitting the batch over processes changes nothing but the reduction order;
    # class-balanced pseudo labels (the mini recipe's hparams.balance=0.5) count the classes over the global batch.
    # DistributedDataParallel: accumulation micro-batches under no_sync, per-term backwards then sync_gradients
    cfg = tiny(data_root, 'cps', batch_size=4 * accum, crop_size=32,
               **{'train.backward': backward, 'hparams.balance': balance, 'accum_steps': accum})
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), cfg.to_json(), str(tmp_path), bucket_mb), nprocs=2, join=True)
    single = Trainer(cfg, run_dir=tmp_path / 'single', nets=[PixelNet(1), PixelNet(2)], progress=False)
    for _ in range(3): single.step()
    ddp = torch.load(tmp_path / 'ddp.pt')
    moved = False
    for net, sd in zip(single.nets, ddp):
        for k, v in net.state_dict().items():
            assert torch.allclose(v, sd[k], atol=1e-6, rtol=1e-5), k
        moved |= not torch.allclose(net.state_dict()['a.weight'], PixelNet(1).a.weight) 
    assert moved


def _replica_worker(rank, world, port, cfg_json, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from cps_repro.config import ExperimentConfig
    tr = Trainer(ExperimentConfig.from_json(cfg_json), run_dir=Path(out) / 'run', dist_info=setup_distributed('cpu'), progress=False)
    for _ in range(2): tr.step()
    torch.save([n.state_dict() for n in tr.nets], Path(out) / f'rank{rank}.pt')
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize('method', ['cct', 'gct', 'mean_teacher'])
def test_ddp_replicas_stay_equal_for_every_kind_of_method(data_root, tmp_path, method):
    # each process sees other images; with the gradients averaged by DDP every replica takes the same update: CCT calls
    # its network's own forward_aux (through DDPNetwork), GCT trains an extra module (ctx.reduce_gradients), Mean
    # Teacher's EMA teacher is not wrapped (rank 0's weights at the start, then the same EMA everywhere)
    if method == 'mean_teacher': d = tiny(data_root, 'mean_teacher', batch_size=4).to_dict()
    else:   # no mini preset: the mini CPS recipe with the method swapped in (its own default hyperparameters)
        d = tiny(data_root, 'cps', batch_size=4).to_dict(); d['train']['method'] = method; d['hparams'] = None; d['name'] = f'ddp_{method}'
    from cps_repro.config import ExperimentConfig
    cfg = ExperimentConfig.from_dict(d)
    torch.multiprocessing.spawn(_replica_worker, args=(2, _free_port(), cfg.to_json(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1))
    first = build_networks(cfg, torch.device('cpu'))
    for a, b, f in zip(r0, r1, first):
        params = {k for k, _ in f.named_parameters()}
        for k in params: assert torch.allclose(a[k], b[k], atol=1e-6), (method, k)
        assert any(not torch.equal(a[k], f.state_dict()[k]) for k in params), 'nothing trained'


def test_ddp_bf16_gradient_compression_is_the_switch_it_says(data_root, tmp_path):
    # train.grad_compression=bf16: DDP's bf16 hook sends the gradients rounded to bfloat16; the update differs from one
    # process by that rounding only (and does differ: the hook is on); the run id is unchanged when the switch is off
    cfg = tiny(data_root, 'cps', batch_size=4, crop_size=32, **{'train.grad_compression': 'bf16'})
    off = tiny(data_root, 'cps', batch_size=4, crop_size=32)
    assert cfg.run_id != off.run_id
    from cps_repro.config import comparable
    before = off.to_dict(); del before['train']['grad_compression']     # a config written before the switch existed
    assert comparable(off.to_dict()) == comparable(before)              # has the same identity
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), cfg.to_json(), str(tmp_path)), nprocs=2, join=True)
    single = Trainer(cfg, run_dir=tmp_path / 'single', nets=[PixelNet(1), PixelNet(2)], progress=False)
    for _ in range(3): single.step()
    ddp = torch.load(tmp_path / 'ddp.pt')
    diff = max(float((v - sd[k]).abs().max()) for net, sd in zip(single.nets, ddp) for k, v in net.state_dict().items())
    assert 1e-7 < diff < 1e-3, diff


def _checkpoint_params(run_dir):
    "The networks' parameters in a run's checkpoint (not BN running statistics: each process keeps its own)."
    nets = torch.load(Path(run_dir) / 'checkpoint.pt', map_location='cpu', weights_only=False)['nets']
    return [{k: v for k, v in sd.items() if 'running_' not in k and 'num_batches_tracked' not in k} for sd in nets]


@pytest.mark.slow
def test_two_torchrun_nodes_equal_one_process_on_the_combined_batch(tmp_path):
    # two "machines" on localhost: two torchrun agents that meet through the c10d rendezvous (gloo), each starting one
    # process of `cps-repro train --preset mini_cps`; one process with accum_steps=2 on the same global batch computes
    # the same (micro-batch i is the share of process i, batch norm included: on CPU there is no SyncBatchNorm).
    # Class balance is off: under DDP it counts classes over the global batch, under accumulation over the micro-batch.
    syn = tmp_path / 'syn'
    synthesize(syn, n=24, n_val=4, size=32, progress=False)
    common = ['train', '--preset', 'mini_cps', '--split', '1_8', '--data-root', str(syn), '--no-progress', '--device', 'cpu',
              '--set', 'iters=3', 'batch_size=4', 'eval_every=3', 'checkpoint_every=3', 'log_every=1', 'workers=0',
              'hparams.balance=0']
    port = _free_port()
    node = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc-per-node', '1', '--rdzv-backend', 'c10d',
            '--rdzv-endpoint', f'127.0.0.1:{port}', '--rdzv-id', 'two_nodes', '--local-addr', '127.0.0.1', '--max-restarts', '0',
            '-m', 'cps_repro.cli', *common, '--run-dir', str(tmp_path / 'two_nodes')]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo', 'PYTHONPATH': str(REPO)}
    procs = [subprocess.Popen(node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try: outs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs: p.kill()
    assert all(p.returncode == 0 for p in procs), '\n'.join(o[-3000:] for o in outs)
    res = json.loads((tmp_path / 'two_nodes' / 'result.json').read_text())
    assert res['world_size'] == 2 and res['iters'] == 3
    assert cli_main([*common, 'accum_steps=2', '--run-dir', str(tmp_path / 'one')]) == 0
    for a, b in zip(_checkpoint_params(tmp_path / 'two_nodes'), _checkpoint_params(tmp_path / 'one')):
        assert a.keys() == b.keys()
        for k in a: assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    first = torch.load(REPO / 'cps_repro' / 'assets' / 'small_resnet_s2_pretrained.pt', weights_only=True)
    k = next(iter(first))
    assert not torch.equal(_checkpoint_params(tmp_path / 'one')[0]['backbone.' + k], first[k]), 'the networks did not train'


def test_gradient_accumulation_equals_the_full_batch(data_root, tmp_path):
    cfg = tiny(data_root, 'supervised', batch_size=8, crop_size=32)
    a = Trainer(cfg, run_dir=tmp_path / 'a', nets=[PixelNet(1)], progress=False)
    b = Trainer(apply_overrides(cfg, ['accum_steps=4']), run_dir=tmp_path / 'b', nets=[PixelNet(1)], progress=False)
    for _ in range(2): a.step(); b.step()
    for k, v in a.nets[0].state_dict().items():
        assert torch.allclose(v, b.nets[0].state_dict()[k], atol=1e-6), k


def test_poly_learning_rate_and_no_decay_on_bn_and_bias(data_root, tmp_path):
    cfg = tiny(data_root, 'supervised', iters=10)
    tr = Trainer(cfg, run_dir=tmp_path / 'lr', progress=False)
    base = cfg.optim.lr
    for it in range(1, 6):
        tr.step()
        assert tr.lr == pytest.approx(base * (1 - it / 10) ** 0.9)
    assert poly_factor(10, 10) == 0
    groups = param_groups(tr.nets[0], 1e-4)
    no_decay = {id(p) for p in groups[1]['params']}
    for m in tr.nets[0].modules():
        if isinstance(m, nn.BatchNorm2d): assert id(m.weight) in no_decay and id(m.bias) in no_decay
        if isinstance(m, nn.Conv2d):
            assert id(m.weight) not in no_decay
            if m.bias is not None: assert id(m.bias) in no_decay
    assert groups[1]['weight_decay'] == 0 and groups[0]['weight_decay'] == 1e-4
    assert [g['weight_decay'] for g in tr.opts[0].param_groups] == [cfg.optim.weight_decay, 0.0]


def test_mean_teacher_teacher_gets_no_gradient_and_follows_the_ema(data_root, tmp_path):
    tr = Trainer(tiny(data_root, 'mean_teacher'), run_dir=tmp_path / 'mt', progress=False)
    student, teacher = tr.nets
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))
    t0 = [p.detach().clone() for p in teacher.parameters()]
    tr.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert len(tr.opts) == 1
    for p0, t, s in zip(t0, teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.99 * p0 + 0.01 * s.detach(), atol=1e-7)


def test_cps_networks_differ_only_in_their_heads(data_root):
    n1, n2 = build_networks(tiny(data_root, 'cps'), torch.device('cpu'))
    assert all(torch.equal(a, b) for a, b in zip(n1.backbone.state_dict().values(), n2.backbone.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(n1.head.state_dict().values(), n2.head.state_dict().values()))


def test_nan_loss_stops_with_iteration_and_term_and_keeps_the_checkpoint(data_root, tmp_path):
    tr = Trainer(tiny(data_root, 'cps', iters=6), run_dir=tmp_path / 'nan', progress=False)
    orig = tr.method.losses
    def poisoned(ctx, batch):
        terms = orig(ctx, batch)
        if ctx.it >= 2: terms['sup2'] = (terms['sup2'][0] * float('inf') * 0, 1.0)
        return terms
    tr.method = dataclasses.replace(tr.method, losses=poisoned)
    with pytest.raises(NonFiniteLossError, match=r"'sup2'.*iteration 3"):
        tr.fit()
    state = torch.load(tmp_path / 'nan' / 'checkpoint.pt', weights_only=False)
    assert state['iteration'] == 2 and all(torch.isfinite(v).all() for v in state['nets'][0].values() if v.is_floating_point())


def test_a_run_directory_of_another_config_is_never_overwritten(data_root, tmp_path):
    train(tiny(data_root, 'supervised', iters=2), run_dir=tmp_path / 'run', progress=False)
    before = (tmp_path / 'run' / 'result.json').read_bytes()
    with pytest.raises(FileExistsError, match='another run'):
        train(tiny(data_root, 'supervised', iters=3), run_dir=tmp_path / 'run', progress=False)
    assert (tmp_path / 'run' / 'result.json').read_bytes() == before


def test_self_training_without_or_with_a_wrong_teacher_is_a_clear_error(data_root, tmp_path):
    with pytest.raises(ValueError, match='teacher_checkpoint'):
        Trainer(tiny(data_root, 'self_training'), run_dir=tmp_path / 'st', progress=False)
    with pytest.raises(FileNotFoundError, match='nothere'):
        Trainer(tiny(data_root, 'self_training', teacher_checkpoint=str(tmp_path / 'nothere.pt')), run_dir=tmp_path / 'st', progress=False)


def test_self_training_teacher_is_frozen_in_eval_mode(data_root, tmp_path):
    train(tiny(data_root, 'supervised'), out_dir=tmp_path / 't', progress=False)
    ckpt = tmp_path / 't' / tiny(data_root, 'supervised').run_id / 'checkpoint.pt'
    tr = Trainer(tiny(data_root, 'self_training', teacher_checkpoint=str(ckpt)), run_dir=tmp_path / 'st', progress=False)
    teacher = tr.nets[1]
    before = [p.clone() for p in teacher.parameters()]
    tr.step(); tr.nets[1].train()
    assert not teacher.net.training and all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    sd = torch.load(ckpt, weights_only=False)['nets'][0]
    assert all(torch.equal(v, teacher.net.state_dict()[k]) for k, v in sd.items())


def test_one_image_per_forward_with_batch_norm_is_refused_clearly(data_root, tmp_path):
    with pytest.raises(ValueError, match='batch norm cannot train on one image'):
        Trainer(tiny(data_root, 'cps', batch_size=2, accum_steps=2), run_dir=tmp_path / 'bn', progress=False)


@pytest.mark.parametrize('opts', [['amp=bf16', 'channels_last=true'], ['amp=fp16'], ['compile=true']])
def test_mixed_precision_channels_last_and_compile_train_on_cpu(data_root, tmp_path, opts):
    cfg = apply_overrides(tiny(data_root, 'cps_cutmix', iters=2, eval_every=2), opts)
    tr = Trainer(cfg, run_dir=tmp_path / 'amp', nets=[PixelNet(1), PixelNet(2)], progress=False)
    before = [p.clone() for p in tr.nets[0].parameters()]
    losses = [tr.step() for _ in range(2)]
    assert all(torch.isfinite(v).all() for l in losses for v in l.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.nets[0].parameters()))
    assert all(k.startswith(('a.', 'b.')) for k in tr.state_dict()['nets'][0])   # plain keys, even when compiled


def test_cli_eval_reproduces_the_final_miou_of_a_run(data_root, tmp_path, capsys):
    cfg = tiny(data_root, 'cps', iters=2)
    result = train(cfg, out_dir=tmp_path, progress=False)
    run = tmp_path / cfg.run_id
    assert cli_main(['eval', '--run', str(run), '--out', str(tmp_path / 'eval.json')]) == 0
    out = json.loads((tmp_path / 'eval.json').read_text())
    assert out['iteration'] == 2 and out['miou'] == pytest.approx(result['miou'])
    assert out['miou_2'] == pytest.approx(result['miou_net2']) and 'mIoU' in capsys.readouterr().out
    assert cli_main(['eval', '--run', str(run), '--out', str(tmp_path / 'eval.json')]) == 2   # never overwrites
    assert cli_main(['eval', '--run', str(tmp_path / 'nothing')]) == 2


def test_a_kill_between_the_final_checkpoint_and_result_json_does_not_duplicate_the_last_evaluation(data_root, tmp_path):
    cfg = tiny(data_root, 'cps')
    first = train(cfg, run_dir=tmp_path / 'run', progress=False)
    (tmp_path / 'run' / 'result.json').unlink()          # as if killed after the final checkpoint, before result.json
    again = train(cfg, run_dir=tmp_path / 'run', progress=False)
    assert [h['iter'] for h in again['history']] == [2, 4] and again['miou'] == first['miou']
    evals = [json.loads(l) for l in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['iter'] for r in evals if 'miou' in r] == [2, 4]


@pytest.mark.parametrize('method', ['cps_cutmix', 'cps'])
def test_backward_per_term_gives_the_gradients_of_one_backward(data_root, tmp_path, method):
    grads = {}
    for mode in ('total', 'per_term'):
        tr = Trainer(tiny(data_root, method, **{'train.backward': mode, 'train.accum_steps': 2, 'batch_size': 4}),
                     run_dir=tmp_path / mode, progress=False)
        logged = tr.compute_gradients(tr.context(), tr.next_batch())
        grads[mode] = ([p.grad.clone() for n in tr.nets for p in n.parameters() if p.grad is not None], logged)
    (g1, l1), (g2, l2) = grads['total'], grads['per_term']
    assert len(g1) == len(g2) > 0   # equal up to summation order: relative to each gradient's scale
    assert all(float((a - b).abs().max()) <= 1e-5 * float(a.abs().max()) + 1e-9 for a, b in zip(g1, g2))
    assert set(l1) == set(l2) and all(torch.allclose(l1[k], l2[k]) for k in l1)


def test_official_checkpoint_range_is_evaluated_and_recorded(data_root, tmp_path):
    "Issue 14 item 4: the iterations of `eval.checkpoint_iters` are evaluated too; result.json keeps final and best."
    cfg = tiny(data_root, 'supervised', iters=4, eval_every=4, **{'eval.checkpoint_iters': '1,3'})
    res = train(cfg, out_dir=tmp_path, progress=False)
    assert [r['iter'] for r in res['history']] == [1, 3, 4]
    rng = res['official_range']
    assert rng['iters'] == [1, 3] and rng['evaluated'] == 2 and rng['best_miou'] == max(r['miou'] for r in res['history'][:2])
    assert res['miou'] == res['history'][-1]['miou'] and res['data']['provenance'] == 'generated'
    assert train(tiny(data_root, 'supervised', iters=4, eval_every=4), out_dir=tmp_path, progress=False)['official_range'] is None


def test_paper_presets_evaluate_the_official_checkpoint_range():
    from cps_repro.presets import official_checkpoint_iters, official_iters
    voc, city = preset('voc_cps', '1_8'), preset('cityscapes_cps', '1_8')
    assert len(voc.eval.checkpoint_iters) == 14 and voc.eval.checkpoint_iters[-1] == voc.train.iters
    assert len(city.eval.checkpoint_iters) == 7 and city.eval.checkpoint_iters == official_checkpoint_iters('cityscapes', '1_8')
    assert preset('mini_cps', '1_16').eval.checkpoint_iters == ()


def test_same_config_on_other_data_is_another_run(data_root, tmp_path):
    "Issue 12 item 6: another data root gives another run id; a finished result on other data is never returned."
    other = tmp_path / 'other'
    synthesize(other, layout='voc', n=64, n_val=8, seed=4, size=32, progress=False, border_ignore=0)
    a, b = tiny(data_root, 'supervised', iters=2), tiny(other, 'supervised', iters=2)
    assert a.run_id != b.run_id
    ra = train(a, out_dir=tmp_path / 'out', progress=False)
    rb = train(b, out_dir=tmp_path / 'out', progress=False)
    assert ra['data']['fingerprint'] != rb['data']['fingerprint'] and ra['run_id'] != rb['run_id']


# ---- issue 26: a run is its data; resume checks what it continues; one process per run directory -----------------
def _own_folder(root, n=8):
    import numpy as np
    from PIL import Image
    (root / 'images').mkdir(parents=True); (root / 'masks').mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / 'images' / f'im{i}.png')
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(root / 'masks' / f'im{i}.png')
    (root / 'labeled.txt').write_text('im0\nim1\nim2\nim3\n'); (root / 'unlabeled.txt').write_text('im4\nim5\n')
    (root / 'val.txt').write_text('im6\nim7\n')
    return root


def test_own_data_lists_are_fingerprinted_and_an_edited_list_is_another_run(tmp_path, capsys):
    "Issue 26 item 1: list files named relative to --data-root are resolved, recorded and part of the run id."
    root = _own_folder(tmp_path / 'mine')
    argv = ['train', '--preset', 'mini_supervised', '--data-root', str(root), '--own-data', 'labeled.txt', 'unlabeled.txt',
            'val.txt', '--num-classes', '3', '--out-dir', str(tmp_path / 'r'), '--no-progress', '--set', 'iters=2',
            'batch_size=2', 'eval_every=2', 'checkpoint_every=2', 'workers=0']
    assert cli_main(argv) == 0
    (first,) = [json.loads(p.read_text()) for p in (tmp_path / 'r').glob('*/result.json')]
    assert set(first['data']['lists']) == {'labeled', 'unlabeled', 'val'} and first['n_labeled'] == 4
    (root / 'labeled.txt').write_text('im0\nim1\nim2\n')
    capsys.readouterr()
    assert cli_main(argv) == 0
    assert 'finished already' not in capsys.readouterr().out
    results = {r['n_labeled']: r for r in (json.loads(p.read_text()) for p in (tmp_path / 'r').glob('*/result.json'))}
    assert set(results) == {3, 4} and results[3]['run_id'] != results[4]['run_id']
    assert results[3]['data']['lists']['labeled']['sha256'] != first['data']['lists']['labeled']['sha256']


def test_a_run_resumed_on_changed_lists_is_refused_naming_the_difference(tmp_path):
    "Issue 26 item 2: the checkpoint of a run directory continues only on the data it was trained on."
    import shutil
    from cps_repro.partitions import split_files
    root = tmp_path / 'data'; synthesize(root, layout='voc', n=32, n_val=4, seed=6, size=32, progress=False, border_ignore=0)
    run = tmp_path / 'run'
    cfg = tiny(root, 'supervised', iters=4, eval_every=4)
    Trainer(cfg, run_dir=run, progress=False).fit()
    (run / 'result.json').unlink()                    # as if killed after its last checkpoint
    lab = split_files('voc', '1_4', root / 'partitions')['labeled']
    ids = lab.read_text().split(); lab.write_text('\n'.join(ids[:3]) + '\n')
    with pytest.raises(ValueError) as e:
        Trainer(tiny(root, 'supervised', iters=4, eval_every=4), run_dir=run, progress=False).fit()
    msg = str(e.value)
    assert 'labeled' in msg and f'{len(ids) - 3} ids removed' in msg and 'checkpoint' in msg
    assert not (run / 'result.json').exists()


def test_two_runs_in_one_run_directory_are_refused_and_a_stale_lock_is_taken_over(data_root, tmp_path, capsys):
    "Issue 26 item 4: a lock on the run directory names the process that holds it."
    from cps_repro.runs import RUN_LOCK, RunLockedError
    cfg = tiny(data_root, 'supervised', iters=2)
    run = tmp_path / 'run'; run.mkdir()
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (run / RUN_LOCK).write_text(json.dumps({'pid': holder.pid, 'host': socket.gethostname(), 'started': 'now'}))
        with pytest.raises(RunLockedError) as e: Trainer(cfg, run_dir=run, progress=False).fit()
        assert str(holder.pid) in str(e.value) and socket.gethostname() in str(e.value)
        assert not (run / 'result.json').exists()
    finally:
        holder.kill(); holder.wait()
    with pytest.warns(UserWarning, match=f'stale lock.*{holder.pid}'):
        res = Trainer(cfg, run_dir=run, progress=False).fit()        # the holder is dead: its lock is stale
    assert res['iters'] == 2 and not (run / RUN_LOCK).exists()


def test_a_run_recorded_before_file_sizes_counted_is_found_finished_on_the_same_lists(data_root, tmp_path):
    "Issue 26: a result.json of the lists-only fingerprint (no data.json) is the same data when its lists are the same."
    from cps_repro.partitions import data_fingerprint
    cfg = tiny(data_root, 'supervised', iters=2)
    run = tmp_path / 'run'
    first = Trainer(cfg, run_dir=run, progress=False).fit()
    (run / 'data.json').unlink()
    old = json.loads((run / 'result.json').read_text())
    for v in old['data']['lists'].values(): v.pop('files')
    old['data']['fingerprint'] = data_fingerprint(cfg.data.root, {k: v['path'] for k, v in old['data']['lists'].items()})
    (run / 'result.json').write_text(json.dumps(old))
    assert Trainer(cfg, run_dir=run, progress=False).fit()['miou'] == first['miou']
