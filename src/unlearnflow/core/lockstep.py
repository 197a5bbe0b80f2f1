"""Bank-vectorised unlearning: one task per model, their training loops run as one.

A method is written for one model (:mod:`unlearnflow.methods`): it reads its request, draws what
it draws, and trains through :func:`unlearnflow.core.training.fit`, as often as it likes (SCRUB
alternates passes, PGU runs one epoch at a time and stops when its own model says so).
:func:`run_lockstep` runs one such task per model of a bank, each in its own thread, *one thread
at a time* (threads used as coroutines, so method code needs no locking and makes its draws in
the order it would alone). A task that calls ``fit`` hands the call over and waits. When every
task waits or has finished, the waiting calls that can share one loop (:func:`_shares_a_loop`:
the same inputs, recipe, subset size, architecture, loss and kind of gradient edit) run as one
:func:`~unlearnflow.core.ensemble.fit_stacked`, the others one by one through ``fit``, and each
task resumes with its model trained, as if ``fit`` had trained it alone. Per-model early stopping
needs nothing more: a task that stops simply calls ``fit`` no more.

So every fine-tuning method is vectorised by this one mechanism, and each model's result is the
per-model loop's with the same seed: bitwise on the CPU for plain Linear chains (the stacked
loop uses the same kernels as ``fit``, :mod:`unlearnflow.core.ensemble`), up to the rounding of
grouped convolutions for conv nets (tested per method in ``tests/test_lockstep.py``).

Costs. A task's clock (:func:`unlearnflow.core.training.clock`) counts the time the task itself
ran plus its share (1/E) of each vectorised loop it took part in, so a method that times itself
reports its own cost; the scheduling between them (handing calls over, grouping) is counted in
no model's. ``fit``'s progress bar is not shown for handed-over calls.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import torch
from torch import nn

from unlearnflow.core.ensemble import fit_stacked
from unlearnflow.core.recipe import TrainConfig
from unlearnflow.core.training import LOCKSTEP, FitStats, PerExampleLoss, fit
from unlearnflow.errors import UserError


@dataclass
class FitCall:
    """The arguments of one task's ``fit`` call, and what it returned (stats or error)."""

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    config: TrainConfig
    seed: int
    subset: torch.Tensor | None
    loss: PerExampleLoss | None
    after_backward: Callable[[nn.Module], None] | None
    stats: FitStats | None = None
    error: BaseException | None = None

    def rows(self) -> torch.Tensor:
        return torch.arange(len(self.inputs), device=self.inputs.device) if self.subset is None \
            else self.subset.to(self.inputs.device)

    @cached_property
    def signature(self) -> tuple:
        """What two calls must share, beyond inputs and loss, to train in one loop (:func:`_shares_a_loop`)."""
        return (self.config, len(self.inputs) if self.subset is None else len(self.subset), self.targets.shape,
                self.targets.dtype, self.after_backward is None, _architecture(self.model))

    @cached_property
    def stackable(self) -> bool:
        return _stackable(self.model)


class _Aborted(Exception):
    """Raised in the tasks still waiting once another task failed, to unwind them."""


class _Task(threading.Thread):
    """One model's task; runs only between :meth:`step`'s resume and its next hand-over."""

    def __init__(self, work: Callable[[], Any], handed_over: threading.Semaphore, threads: int):
        super().__init__(daemon=True)
        self.work, self.handed_over, self.threads = work, handed_over, threads
        self.resume = threading.Semaphore(0)
        self.call: FitCall | None = None
        self.done, self.result, self.error = False, None, None
        self.seconds, self.resumed_at = 0.0, 0.0

    def run(self) -> None:
        LOCKSTEP.fit, LOCKSTEP.clock = self.defer, self.clock
        self.wait_for_turn()
        try:
            # the caller's intra-op threads: a new thread's OpenMP default (every core) makes MKL
            # take other kernels for small matrix products, which round differently
            torch.set_num_threads(self.threads)
            self.result = self.work()
        except BaseException as error:  # re-raised by run_lockstep in the caller's thread
            self.error = error
        finally:
            self.done = True
            self.seconds += time.perf_counter() - self.resumed_at
            self.handed_over.release()

    def wait_for_turn(self) -> None:
        self.resume.acquire()
        self.resumed_at = time.perf_counter()

    def clock(self) -> float:
        return self.seconds + time.perf_counter() - self.resumed_at

    def defer(self, *args: Any) -> FitStats:
        """``fit`` inside the task: hand the call over, wait until it ran, return its stats."""
        self.call = FitCall(*args)
        self.seconds += time.perf_counter() - self.resumed_at
        self.handed_over.release()
        self.wait_for_turn()
        call, self.call = self.call, None
        if call.error is not None:
            raise call.error
        self.seconds += call.stats.seconds
        return call.stats

    def step(self) -> None:
        """Let the task run until it hands a call over or finishes."""
        self.resume.release()
        self.handed_over.acquire()


def run_lockstep(work: Sequence[Callable[[], Any]], models_per_pass: int = 0) -> list[Any]:
    """Run every callable of `work` (one model's unlearning each) and return their results in
    order, their ``fit`` calls run together (module docstring) by passes of at most
    `models_per_pass` tasks (0: all at once; 1: one callable after the other, no threads), which
    bounds the models a stacked loop holds. The first error of a task is raised here, once every
    task of its pass ended."""
    if models_per_pass < 0:
        raise UserError(f"models per pass must be >= 0 (0: all at once), got {models_per_pass}")
    if models_per_pass == 1:
        return [item() for item in work]
    per_pass = models_per_pass or max(len(work), 1)
    return [result for start in range(0, len(work), per_pass) for result in _one_pass(work[start:start + per_pass])]


def _one_pass(work: Sequence[Callable[[], Any]]) -> list[Any]:
    handed_over = threading.Semaphore(0)
    tasks = [_Task(item, handed_over, torch.get_num_threads()) for item in work]
    for task in tasks:
        task.start()
    running, scheduler_error = list(tasks), None
    while running:
        for task in running:
            task.step()
        running = [task for task in running if not task.done]
        calls = [task.call for task in running]
        if scheduler_error is None and not any(task.error is not None for task in tasks):
            try:
                groups = _groups(calls)
            except BaseException as error:  # grouping failed: unwind every task, then raise it
                scheduler_error, groups = error, []
            for group in groups:
                _run_group(group)
        for call in calls:
            if call.stats is None and call.error is None:
                call.error = _Aborted()
    for task in tasks:
        task.join()
    errors = [task.error for task in tasks if task.error is not None and not isinstance(task.error, _Aborted)]
    if scheduler_error is not None or errors:
        raise scheduler_error or errors[0]
    return [task.result for task in tasks]


def _groups(calls: list[FitCall]) -> list[list[FitCall]]:
    """The calls in groups that can share one loop, each group in task order."""
    groups: list[list[FitCall]] = []
    for call in calls:
        group = next((group for group in groups if _shares_a_loop(group[0], call)), None)
        if group is None:
            groups.append([call])
        else:
            group.append(call)
    return groups


def _run_group(group: list[FitCall]) -> None:
    try:
        if len(group) == 1:
            call = group[0]
            call.stats = fit(call.model, call.inputs, call.targets, call.config, call.seed, call.subset, call.loss,
                             call.after_backward)
            return
        edits = [call.after_backward for call in group] if group[0].after_backward is not None else None
        stats = fit_stacked([call.model for call in group], group[0].inputs, [call.targets for call in group],
                            group[0].config, [call.seed for call in group], [call.rows() for call in group],
                            group[0].loss, edits)
        for call in group:
            call.stats = stats
    except BaseException as error:
        for call in group:
            call.error = error


def _shares_a_loop(first: FitCall, other: FitCall) -> bool:
    """Whether two calls train the same way: the same inputs, recipe, subset size, target
    shape, architecture (parameter names, shapes and which are trained; module types), the same
    loss (:func:`same_function`) and both or neither editing gradients; and whether their models
    compute what their modules say (:func:`_stackable`)."""
    return (first.stackable and other.stackable and first.signature == other.signature
            and _same_tensor(first.inputs, other.inputs) and same_function(first.loss, other.loss))


def _same_tensor(first: torch.Tensor, other: torch.Tensor) -> bool:
    """The same tensor, or equal ones (a request's forget inputs are gathered per model)."""
    return first is other or (first.shape == other.shape and first.dtype == other.dtype
                              and first.device == other.device and torch.equal(first, other))


def _stackable(model: nn.Module) -> bool:
    """No hooks on modules or parameters and no forward replaced on a module: the stacked forward
    evaluates the architecture from its weights alone, so a model whose hooks change what it
    computes (TRGP's trust region, :mod:`unlearnflow.pgu.trgp`) trains alone."""
    return not any(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                   or module._backward_pre_hooks or "forward" in vars(module) for module in model.modules()) \
        and not any(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None) for p in model.parameters())


def _architecture(model: nn.Module) -> tuple:
    return (tuple((type(module), module.extra_repr()) for module in model.modules()),
            tuple((name, p.shape, p.dtype, p.requires_grad) for name, p in model.named_parameters()),
            tuple((name, b.shape) for name, b in model.named_buffers()))


def same_function(first: Any, other: Any) -> bool:
    """Whether two per-example losses compute the same function: the same object, or closures of
    the same code, bound to the same object if methods, whose defaults and captured values are
    equal (numbers, strings, and tuples, lists and dicts of them) or are themselves the same
    function, e.g. two ``negated(cross_entropy_loss())`` built by two models' requests. Anything
    else (a tensor, say) counts as different."""
    if first is other:
        return True
    code = getattr(first, "__code__", None)
    if code is None or code is not getattr(other, "__code__", None):
        return False
    if getattr(first, "__self__", None) is not getattr(other, "__self__", None):
        return False
    cells, other_cells = first.__closure__ or (), other.__closure__ or ()
    return (_same_value(first.__defaults__, other.__defaults__)
            and _same_value(first.__kwdefaults__, other.__kwdefaults__) and len(cells) == len(other_cells)
            and all(_same_value(a.cell_contents, b.cell_contents) for a, b in zip(cells, other_cells)))


def _same_value(first: Any, other: Any) -> bool:
    if first is other:
        return True
    if type(first) is not type(other):
        return False
    if isinstance(first, (int, float, str, bool)):
        return first == other
    if isinstance(first, (tuple, list)):
        return len(first) == len(other) and all(_same_value(a, b) for a, b in zip(first, other))
    if isinstance(first, dict):
        return first.keys() == other.keys() and all(_same_value(first[key], other[key]) for key in first)
    return callable(first) and same_function(first, other)
