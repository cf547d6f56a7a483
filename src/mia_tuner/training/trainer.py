"""The training loop shared by MIA-Tuner and the safeguards: balanced batches under accelerate.

Each step holds ``B`` members and ``B`` non-members drawn from per-class lists shuffled every
epoch with the seed (an epoch is ``ceil(n_per_class / B)`` steps; a class that runs out is
re-drawn from a fresh shuffle, so every batch is full). AdamW over the trainable parameters,
linear decay without warm-up, optional gradient accumulation (the last step of an epoch
always updates). After each epoch a score function is run on the validation texts; the
trainable state of the best epoch is kept.

The same code runs on one CPU process, on a GPU, or on several processes (``torchrun`` /
``accelerate launch``; gloo on CPU): every process draws the same batches and takes its own
slice (``rank::world_size``) of each class, and accelerate (DDP) averages the gradients. A loss
that is a mean over examples is then exact when ``B`` is a multiple of the number of processes;
a loss over the whole batch (the contrastive loss) gathers its per-example values through
``BatchSync``. Validation is computed in full on every process, so all choose the same epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..config import DEFAULT_SEED
from ..data.types import MEMBER, NON_MEMBER, MembershipSet
from ..errors import DataError, Interrupted
from ..metrics import compute_metrics
from .params import load_trainable_state, trainable_state
from .checkpoint import Checkpoint

log = logging.getLogger(__name__)
LAST_TOO_SMALL = "last (validation too small)"
SELECTION = {"max": "best validation AUROC", "chance": "validation AUROC closest to 0.5"}


@dataclass
class TrainerConfig:
    """Optimisation settings (see the module docstring)."""

    learning_rate: float
    epochs: int
    batch_per_class: int
    grad_accum: int = 1
    seed: int = DEFAULT_SEED
    weight_decay: float = 0.0
    objective: str = "max"  # checkpoint selection: max (validation AUROC) | chance (closest to 0.5)
    initial_candidate: bool = True  # the untrained state (epoch 0) may be the one kept
    desc: str = "train"
    # selection under a bound: an epoch whose ``on_epoch`` value ``bound_key`` is at most
    # ``bound_max`` beats any that exceeds it; of epochs that all exceed it, the lowest value
    bound_key: str | None = None
    bound_max: float | None = None

    def __post_init__(self):
        if self.objective not in SELECTION:
            raise ValueError(f"checkpoint selection objective must be one of {sorted(SELECTION)}, "
                             f"got {self.objective!r}")
        if (self.bound_key is None) != (self.bound_max is None):
            raise ValueError("a selection bound needs both bound_key and bound_max")
        if self.bound_key is not None and self.initial_candidate:
            raise ValueError("the untrained state has no on_epoch value to bound: "
                             "a bounded selection needs initial_candidate=False")

    def selection(self) -> str:
        """How the kept epoch is chosen, in words (recorded in the history)."""
        if self.bound_key is None:
            return SELECTION[self.objective]
        return (f"{SELECTION[self.objective]} among epochs with {self.bound_key} <= {self.bound_max:g} "
                f"(if none is: the lowest {self.bound_key})")


@dataclass
class TrainHistory:
    """What happened: per-step loss parts, per-epoch validation AUROC, the chosen epoch."""

    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    initial_validation_auroc: float | None = None
    chosen_epoch: int | None = None
    selection: str = ""
    seconds: float = 0.0
    batch_per_class: int = 0
    steps_per_epoch: int = 0
    processes: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """Everything but the per-step log, plus the first and last step's losses."""
        out = {k: v for k, v in self.to_dict().items() if k != "steps"}
        out["n_steps"] = len(self.steps)
        out["first_step"] = self.steps[0] if self.steps else None
        out["last_step"] = self.steps[-1] if self.steps else None
        return out


class BatchSync:
    """Gathers per-example tensors of a batch sharded over processes (identity in one process).

    ``gather`` returns the whole batch's tensor in rank order, in which only this process's
    slice carries a gradient; ``global_loss`` scales a loss computed on the gathered batch by
    the number of processes, so that after DDP averages the gradients they equal those of the
    one-process loss.
    """

    def __init__(self, accelerator: Accelerator):
        self.world_size = accelerator.num_processes
        self.rank = accelerator.process_index

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return local
        import torch.distributed as dist

        size = torch.tensor([local.shape[0]], device=local.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        width = int(max(s.item() for s in sizes))
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: local.shape[0]] = local.detach()
        pieces = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded)
        pieces = [piece[: int(n.item())] for piece, n in zip(pieces, sizes)]
        pieces[self.rank] = local
        return torch.cat(pieces)

    def global_loss(self, total: torch.Tensor) -> torch.Tensor:
        return total * self.world_size


def epoch_batches(members: list[int], nonmembers: list[int], b: int, rng) -> list[tuple[list[int], list[int]]]:
    """One epoch of (member indices, non-member indices) pairs, ``b`` of each per step."""
    steps = math.ceil(max(len(members), len(nonmembers)) / b)

    def stream(indices: list[int]) -> list[int]:
        out: list[int] = []
        while len(out) < steps * b:
            out += rng.permutation(indices).tolist()
        return out

    m, n = stream(members), stream(nonmembers)
    return [(m[i * b:(i + 1) * b], n[i * b:(i + 1) * b]) for i in range(steps)]


def validation_auroc(score_fn: Callable, model, validation: MembershipSet) -> float:
    """AUROC of ``score_fn(model, texts)`` on the validation set (no bootstrap)."""
    scores = score_fn(model, list(validation.texts))
    return compute_metrics(np.array(validation.labels), scores, n_bootstrap=0).auroc


def _better(value: float, best: float | None, objective: str, *, bounded: float | None = None,
            best_bounded: float | None = None, bound: float | None = None) -> bool:
    """Whether ``value`` beats ``best`` under the selection objective. With a ``bound``, an
    epoch whose ``bounded`` value is within it beats one whose value is not, and of two
    outside it the lower ``bounded`` value wins."""
    if best is None:
        return True
    if bound is not None:
        best_bounded = math.inf if best_bounded is None else best_bounded  # a state saved without one
        fits, best_fits = bounded <= bound, best_bounded <= bound
        if fits != best_fits:
            return fits
        if not fits:
            return bounded < best_bounded
    if objective == "chance":
        return abs(value - 0.5) < abs(best - 0.5)
    return value > best


class Trainer:
    """Trains ``model``'s trainable parameters with ``loss_fn`` on balanced batches.

    ``encode_fn(texts, labels) -> dict of tensors``; ``loss_fn(model, batch, sync) ->
    (loss tensor, dict of floats)``; ``score_fn(model, texts) -> scores`` (higher = member)
    for validation. ``on_epoch(epoch, model) -> dict`` (optional) runs after each epoch's
    validation and its result is added to that epoch's history entry (e.g. a learning curve on
    other texts; it must not touch the training state). After ``fit`` the model (unwrapped, in
    eval mode) holds the chosen state.
    """

    def __init__(self, model, loss_fn: Callable, encode_fn: Callable, config: TrainerConfig,
                 score_fn: Callable | None = None, accelerator: Accelerator | None = None,
                 on_epoch: Callable | None = None, checkpoint: Checkpoint | None = None):
        self.model = model
        self.checkpoint = checkpoint
        self.on_epoch = on_epoch
        self.loss_fn = loss_fn
        self.encode_fn = encode_fn
        self.config = config
        self.score_fn = score_fn
        self.accelerator = accelerator or Accelerator()

    def _class_lists(self, train: MembershipSet) -> tuple[list[int], list[int], int]:
        """Member and non-member row indices, and the per-class batch size actually used."""
        members = [i for i, y in enumerate(train.labels) if y == MEMBER]
        nonmembers = [i for i, y in enumerate(train.labels) if y == NON_MEMBER]
        if not members or not nonmembers:
            raise DataError(f"training needs both classes; got {len(members)} members and "
                            f"{len(nonmembers)} non-members")
        b = min(self.config.batch_per_class, len(members), len(nonmembers))
        if b < self.config.batch_per_class:
            log.warning("batch_per_class %d > smallest class (%d): using %d",
                        self.config.batch_per_class, min(len(members), len(nonmembers)), b)
        world = self.accelerator.num_processes
        if world > 1 and b % world:
            log.warning("%d per class is not a multiple of %d processes: the data-parallel "
                        "gradient only approximates the one-process one", b, world)
        return members, nonmembers, b

    def _step_batch(self, train: MembershipSet, pair) -> dict:
        """This process's slice of one step's members and non-members, encoded, on device."""
        acc = self.accelerator
        rows = pair[0][acc.process_index::acc.num_processes] + pair[1][acc.process_index::acc.num_processes]
        batch = self.encode_fn([train.texts[i] for i in rows], [train.labels[i] for i in rows])
        return {k: v.to(acc.device) for k, v in batch.items()}

    def _mean_parts(self, parts: dict) -> dict:
        """Loss parts averaged over processes (for logging)."""
        if self.accelerator.num_processes == 1:
            return parts
        values = torch.tensor([parts[k] for k in parts], device=self.accelerator.device, dtype=torch.float64)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(parts, values.tolist()))

    def _evaluate(self, model, validation: MembershipSet | None) -> float | None:
        """Validation AUROC of the current state (None without validation or score function)."""
        if validation is None or self.score_fn is None or validation.n_member < 1 or validation.n_nonmember < 1:
            return None
        return validation_auroc(self.score_fn, self.accelerator.unwrap_model(model), validation)

    def fit(self, train: MembershipSet, validation: MembershipSet | None = None) -> TrainHistory:
        """Train for ``config.epochs`` epochs; keep the best validation epoch's state (the
        untrained state, epoch 0, is a candidate too unless ``initial_candidate`` is off).

        With a ``checkpoint``, the state is saved after every update and at the end of every
        epoch, and a run with a saved state continues from it (at most one step is redone);
        Ctrl-C then raises ``Interrupted`` saying what was kept.
        """
        c, acc = self.config, self.accelerator
        set_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        members, nonmembers, b = self._class_lists(train)
        steps_per_epoch = math.ceil(max(len(members), len(nonmembers)) / b)
        updates = c.epochs * math.ceil(steps_per_epoch / c.grad_accum)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, updates)  # stepped here, not by accelerate
        model, optimizer = acc.prepare(self.model, optimizer)
        can_select = validation is not None and min(validation.n_member, validation.n_nonmember) >= 2
        run = _RunState(history=TrainHistory(
            batch_per_class=b, steps_per_epoch=steps_per_epoch, processes=acc.num_processes,
            selection=c.selection() if can_select else LAST_TOO_SMALL))
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        if saved is not None:
            run = _RunState.restore(saved, acc.unwrap_model(model), optimizer, scheduler, rng)
            log.info("resuming from epoch %d, step %d", run.epoch, run.step)
        else:
            run.history.initial_validation_auroc = self._evaluate(model, validation)
            if can_select and c.initial_candidate:
                run.best = run.history.initial_validation_auroc
                run.best_state = trainable_state(acc.unwrap_model(model))
                run.history.chosen_epoch = 0
        self._state = (model, optimizer, scheduler, rng)
        progress = tqdm(total=c.epochs * steps_per_epoch, desc=c.desc, unit="step",
                        initial=len(run.history.steps), disable=not acc.is_local_main_process)
        try:
            self._epochs(run, train, validation, members, nonmembers, b, can_select, progress)
        except KeyboardInterrupt:
            raise Interrupted(self._interrupted_message(run)) from None
        finally:
            progress.close()
        self.model = acc.unwrap_model(model)
        if run.best_state is not None:
            load_trainable_state(self.model, run.best_state)
        else:
            run.history.chosen_epoch = c.epochs
        self.model.eval()
        run.history.seconds = round(run.elapsed(), 3)
        return run.history

    def _epochs(self, run: "_RunState", train, validation, members, nonmembers, b, can_select, progress):
        c, acc = self.config, self.accelerator
        model, optimizer, scheduler, rng = self._state
        sync = BatchSync(acc)
        while run.epoch <= c.epochs:
            epoch, epoch_started = run.epoch, time.perf_counter()
            if run.step == 0:
                run.rng_at_epoch_start = rng.bit_generator.state
            rng.bit_generator.state = run.rng_at_epoch_start  # the same batches after a resume
            batches = epoch_batches(members, nonmembers, b, rng)
            model.train()
            self._run_epoch(model, optimizer, scheduler, sync, train, batches, epoch, run, progress)
            auroc = self._evaluate(model, validation)
            entry = {"epoch": epoch, "validation_auroc": auroc,
                     "seconds": round(time.perf_counter() - epoch_started, 3)}
            if self.on_epoch is not None:
                entry.update(self.on_epoch(epoch, acc.unwrap_model(model)) or {})
            run.history.epochs.append(entry)
            bounded = self._bounded(entry) if can_select else None
            if can_select and _better(auroc, run.best, c.objective, bounded=bounded,
                                      best_bounded=run.best_bounded, bound=c.bound_max):
                run.best, run.best_state = auroc, trainable_state(acc.unwrap_model(model))
                run.best_bounded, run.history.chosen_epoch = bounded, epoch
            run.epoch, run.step = epoch + 1, 0
            self._save(run)

    def _bounded(self, entry: dict) -> float | None:
        """The epoch's value under the selection bound (None without a bound)."""
        key = self.config.bound_key
        if key is None:
            return None
        if entry.get(key) is None:
            raise ValueError(f"selection is bounded by {key!r}, which on_epoch did not return")
        value = float(entry[key])
        return math.inf if math.isnan(value) else value  # an unmeasurable epoch is the worst

    def _save(self, run: "_RunState") -> None:
        """Write the run's state to the checkpoint (main process only)."""
        if self.checkpoint is None or not self.accelerator.is_main_process:
            return
        model, optimizer, scheduler, rng = self._state
        if run.step == 0:
            run.rng_at_epoch_start = rng.bit_generator.state
        self.checkpoint.save(run.snapshot(self.accelerator.unwrap_model(model), optimizer, scheduler))

    def _interrupted_message(self, run: "_RunState") -> str:
        where = f"epoch {run.epoch} of {self.config.epochs}, after step {run.step}"
        if self.checkpoint is None:
            return f"training stopped in {where}; nothing was saved (no checkpoint folder)"
        return (f"training stopped in {where}; that state is saved in {self.checkpoint.directory}: "
                "re-run the same command to resume (--restart starts afresh)")

    def _run_epoch(self, model, optimizer, scheduler, sync, train, batches, epoch, run, progress):
        """Forward/backward the epoch's steps from ``run.step`` on; update every grad_accum
        steps and at the end, saving the state after each update."""
        c, acc, history = self.config, self.accelerator, run.history
        for i in range(run.step, len(batches)):
            pair, step_started = batches[i], time.perf_counter()
            update = (i + 1) % c.grad_accum == 0 or i == len(batches) - 1
            group = min(c.grad_accum, len(batches) - (i // c.grad_accum) * c.grad_accum)
            batch = self._step_batch(train, pair)
            lr = scheduler.get_last_lr()[0]
            context = contextlib.nullcontext() if update else acc.no_sync(model)
            with context:
                loss, parts = self.loss_fn(model, batch, sync)
                acc.backward(loss / group)
            if update:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            parts = self._mean_parts(parts)
            history.steps.append({"epoch": epoch, "step": len(history.steps) + 1, "lr": lr,
                                  "seconds": round(time.perf_counter() - step_started, 4), **parts})
            progress.update(1)
            progress.set_postfix(loss=f"{parts['total'] if 'total' in parts else loss.item():.3f}")
            if update and i < len(batches) - 1:  # the epoch's last update is saved with its validation
                run.step = i + 1
                self._save(run)


@dataclass
class _RunState:
    """Where a run stands: what a checkpoint holds besides the model and optimizer."""

    history: TrainHistory
    epoch: int = 1
    step: int = 0  # steps of ``epoch`` already done
    rng_at_epoch_start: dict | None = None
    best: float | None = None
    best_state: dict | None = None
    best_bounded: float | None = None  # the kept epoch's value under the selection bound
    seconds_before: float = 0.0  # training time of the runs before a resume
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def snapshot(self, model, optimizer, scheduler) -> dict:
        return {"model": trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                "history": self.history.to_dict(), "epoch": self.epoch, "step": self.step,
                "rng_at_epoch_start": self.rng_at_epoch_start, "best": self.best,
                "best_state": self.best_state, "best_bounded": self.best_bounded,
                "seconds": self.elapsed()}

    @classmethod
    def restore(cls, saved: dict, model, optimizer, scheduler, rng) -> "_RunState":
        load_trainable_state(model, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        rng.bit_generator.state = saved["rng_at_epoch_start"]
        return cls(history=TrainHistory(**saved["history"]), epoch=saved["epoch"], step=saved["step"],
                   rng_at_epoch_start=saved["rng_at_epoch_start"], best=saved["best"],
                   best_state=saved["best_state"], best_bounded=saved.get("best_bounded"),
                   seconds_before=saved["seconds"])
