"""Data-parallel training on several processes: the glue between the trainer, ``torchrun`` and DDP.

A run on N processes trains one model with PyTorch's
``DistributedDataParallel``, launched by ``torchrun`` (one process per GPU, or
several CPU processes), and follows the one-process run of the same seed:

* Every rank draws the same shuffled order of the training examples (the
  trainer's shuffling generator, seeded from the run's seed, is the same on
  every rank), so the global batch of step t holds the same examples whatever
  N is; rank r trains on its slice ``shard_bounds(batch, r, N)`` of it.
* The random draws of an example (its reparameterisation noise and, with
  dynamic binarisation, its binary image) are drawn for the whole global batch
  from the shared generators and sliced, so each example gets the draws it
  gets on one process.
* Each rank's loss is ``N / B * sum`` of its examples' losses (B the size of
  the global batch): DDP averages the ranks' gradients, which then equal the
  gradient of the mean loss over the global batch, whatever the slices' sizes
  (the last batch of an epoch may be uneven, a slice may even be empty).  The
  free-bits floor compares the KL per dimension averaged over the global batch.
* Figures are all-reduced as sums and divided by the global count.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`init_world` joins
the process group: NCCL when the device is a CUDA GPU (one per local rank),
Gloo on the CPU.  :func:`launch` starts ``torch.distributed.run`` on this
machine for ``train --nproc N``.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError
from .model import VAE, resolve_device
from .objectives import elbo

#: Seconds a rank waits in a collective for the others before the group fails.
TIMEOUT_S = 1800.0


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous slice [lo, hi) of ``n`` items that rank ``rank`` of ``size`` takes.

    The slices partition range(n) in rank order and their sizes differ by at
    most one (some are empty when ``n < size``).
    """
    return n * rank // size, n * (rank + 1) // size


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def restart_count() -> int:
    """How many times ``torchrun`` has restarted the group this process belongs to (0 at first)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


@dataclass(frozen=True)
class World:
    """The process group this process trains in: its rank among ``size``, its device and backend."""

    rank: int
    size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that prints, writes the run folder and saves checkpoints."""
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's slice [lo, hi) of a global batch of ``n`` examples."""
        return shard_bounds(n, self.rank, self.size)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` (on this rank's device) over the ranks, in place; returns it."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank (a collective: every rank must call it)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0.0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (any picklable object) on every rank."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def describe(self) -> dict[str, Any]:
        """This rank's rank, host, process id and device (``process_info``)."""
        return process_info(self.rank, self.device)


def process_info(rank: int, device: torch.device | str) -> dict[str, Any]:
    """A process of a run as plain values: its rank, host name, process id and device."""
    return {"rank": int(rank), "host": socket.gethostname(), "pid": os.getpid(), "device": str(device)}


def init_world(device: str = "auto", timeout_s: float = TIMEOUT_S) -> World | None:
    """Join the process group that the launcher describes in the environment; None for a single process.

    ``device`` is "auto", "cpu", "cuda" or "cuda:N".  "auto" and "cuda" give
    each process the GPU of its local rank (``LOCAL_RANK``) and the NCCL
    backend; the CPU uses Gloo.  Raises ConfigError when a GPU is asked for
    and none is there.
    """
    if not launched():
        return None
    size = int(os.environ["WORLD_SIZE"])
    if size <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    dev = resolve_device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
        if dev.index is None:
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"local rank {local_rank} has no GPU of its own: this machine has {torch.cuda.device_count()}; "
                    "start at most one process per GPU"
                )
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"data-parallel training runs on CUDA GPUs or the CPU, not on {dev.type!r}")
    timeout = _dt.timedelta(seconds=timeout_s)
    # The store torch.distributed's env:// rendezvous connects to (under torchrun, the
    # launcher's, which outlives a restart), with the keys of each start of the group
    # kept apart: a restarted group must not find the addresses its failed
    # predecessor published there.
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=size, timeout=timeout))
    store = dist.PrefixStore(f"latent-explorer/start-{restart_count()}/", store)
    extra: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout, **extra)
    return World(rank=rank, size=size, local_rank=local_rank, device=dev, backend=backend)


def shutdown(world: World | None) -> None:
    """Leave the process group (nothing to do for a single process)."""
    if world is not None and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------
# The objective of one rank's slice
# ---------------------------------------------------------------------------


class _SliceNoise:
    """A model as ``objectives.elbo`` sees it, whose noise is this rank's rows of the global batch's noise.

    ``reparameterize`` draws eps for all ``batch`` examples of the global
    batch and every one of the ``mc_samples`` Monte Carlo samples, laid out
    as ``elbo`` lays them out (sample-major), and keeps the rows of the
    examples from ``start`` on.  On one process (start 0, the whole batch)
    that is exactly the draw of ``VAE.reparameterize``.
    """

    def __init__(self, model: Any, batch: int, start: int, mc_samples: int) -> None:
        self.model: Any = model
        self.config = model.config
        self.batch: int = batch
        self.start: int = start
        self.mc_samples: int = mc_samples

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(x)

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.log_px_given_z(x, z)

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        mc = self.mc_samples
        n, d = mu.shape[0] // mc, mu.shape[1]
        eps = torch.randn((mc, self.batch, d), dtype=mu.dtype, device=mu.device, generator=generator)
        eps = eps[:, self.start : self.start + n].reshape(mc * n, d)
        return mu + torch.exp(0.5 * logvar) * eps


class ShardObjective(nn.Module):
    """The loss of one rank's slice of a global batch, as the module ``DistributedDataParallel`` wraps.

    ``forward`` returns the loss to back-propagate, ``size / batch`` times the
    sum of the slice's per-example losses (see the module docstring), and the
    slice's sums of loss, recon and KL (float64, detached) for all-reducing.
    ``view`` is what the objective runs (the VAE itself or a mixed-precision
    view of it); the VAE is the module's only parameter holder.
    """

    def __init__(self, model: VAE, view: Any, world: World) -> None:
        super().__init__()
        self.vae = model
        self._view: Any = None if view is model else view
        self._world = world

    def forward(
        self,
        x: torch.Tensor,
        *,
        batch: int,
        start: int,
        beta: float,
        mc_samples: int,
        free_bits: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noise = _SliceNoise(self.vae if self._view is None else self._view, batch, start, mc_samples)
        out = elbo(noise, x, beta=beta, mc_samples=mc_samples, free_bits=0.0, generator=generator)
        if free_bits > 0.0:
            # objectives.elbo's floor, with the batch mean of the KL per dimension
            # taken over the global batch.
            kl_dim_sum = out.kl_per_dim.detach().sum(0)
            below = self._world.all_reduce_sum(kl_dim_sum) / batch < free_bits
            charged = torch.where(below, torch.full_like(out.kl_per_dim, free_bits), out.kl_per_dim).sum(1)
            losses = out.recon + beta * charged
        else:
            losses = out.loss
        sums = torch.stack((losses.detach().sum(), out.recon.detach().sum(), out.kl.detach().sum())).double()
        return losses.sum() * (self._world.size / batch), sums


def data_parallel(model: VAE, view: Any, world: World) -> nn.parallel.DistributedDataParallel:
    """``model``'s objective on ``world``'s device, wrapped in ``DistributedDataParallel``.

    DDP broadcasts rank 0's weights and buffers to every rank here.  Buffers
    are never changed by training (the fixed Gaussian scale), so they are
    not sent again at every step.  A learned scale that the likelihood does
    not use has no gradient, which DDP is told to expect.
    """
    module = ShardObjective(model, view, world)
    cfg = model.config
    unused = cfg.learn_sigma and cfg.likelihood != "gaussian"
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, forward_sync_buffers=False, find_unused_parameters=unused
    )


# ---------------------------------------------------------------------------
# Launching on this machine
# ---------------------------------------------------------------------------


def launch(argv: Sequence[str], nproc: int, max_restarts: int = 0) -> int:
    """Run ``python -m vae_core <argv>`` on ``nproc`` processes of this machine under ``torch.distributed.run``.

    The equivalent of ``torchrun --standalone --nproc-per-node N
    --max-restarts R -m vae_core <argv>``: a rendezvous on a free localhost
    port, and with ``max_restarts`` a failed group (a process that died) is
    started again, up to that many times.  Returns rank 0's exit status (the
    first failure's when rank 0 did not fail), or 128 + the signal that
    stopped this launcher.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts must be >= 0, got {max_restarts}")
    # torchrun would set one thread per process and warn about it; share the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "-m", "vae_core"]
    )
    # Set after parsing: torchrun's parser would take options of ours that look like its own.
    args.training_script_args = list(argv)
    try:
        run(args)
    except ChildFailedError as exc:
        failure = exc.failures.get(0)
        if failure is None:
            _, failure = exc.get_first_failure()
        code = int(failure.exitcode)
        return 128 - code if code < 0 else (code or 1)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0
