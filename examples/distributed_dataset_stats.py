"""Data-set Fisher statistics shared by several processes (torch.distributed; THEORY §8).

Launch (CPU: gloo; on GPUs the same line uses NCCL, one GPU per process)::

    torchrun --nproc_per_node=2 examples/distributed_dataset_stats.py

Every rank builds the same model (same seed: the ranks check that the weights agree), takes its own
shard of the data (``fishersym.numeric.distributed.shard``; with a DataLoader use a
``DistributedSampler``) and calls ``dataset_stats(..., process_group=None)``: None means the WORLD
group once ``torch.distributed`` is initialised.  Every rank gets the *global* result, the one of all
the data; rank 0 prints it and checks it against a one-process pass over all the data.

Without torchrun (``python examples/distributed_dataset_stats.py``) it runs as one process.
"""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist
from torch import nn

from fishersym import families
from fishersym.numeric import dataset_stats
from fishersym.numeric.distributed import init_from_env, shard


def make_model() -> nn.Module:
    torch.manual_seed(0)                                  # the same weights on every rank
    return nn.Sequential(nn.Linear(20, 16), nn.Sigmoid(), nn.Linear(16, 10)).double().eval()


def make_data(n: int = 1000) -> torch.Tensor:
    return torch.rand(n, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def main() -> None:
    distributed = "RANK" in os.environ                    # launched by torchrun
    rank, world = init_from_env() if distributed else (0, 1)
    # on GPUs (NCCL) each rank analyses on its own device (init_from_env set it); CPU otherwise
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    model, x, fam = make_model().to(device), make_data().to(device), families.get("categorical", C=10)
    t = time.perf_counter()
    mine = shard(x) if distributed else x                 # this rank's rows
    r = dataset_stats(model, mine, fam, scheme="iid", use_eig=False, progress=False)
    seconds = time.perf_counter() - t
    if rank == 0:
        print(f"{world} process(es) on {device} (backend {dist.get_backend() if distributed else 'none'}); "
              f"this rank analysed {mine.shape[0]} of {r.info['n_inputs']} inputs in {seconds:.2f} s")
        for g, d in r.groups.items():
            print(f"  {g:4}  Σ I = {float(d['fisher']):.6g}   Σ Var Î₁ = {float(d['var1']):.6g}   "
                  f"Σ Var Î₂ = {float(d['var2']):.6g}   Σ Var_q I = {float(d['input_var']):.6g}")
        one = dataset_stats(model, x, fam, scheme="iid", use_eig=False, progress=False, process_group=False)
        worst = max(float(((r[k][n] - one[k][n]).abs() / one[k][n].abs().clamp_min(1e-300)).max())
                    for k in one.keys() for n in one[k] if not one[k][n].isnan().any())
        print(f"largest relative difference to one process over all keys: {worst:.2g}")
        assert worst < 1e-12, worst
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
