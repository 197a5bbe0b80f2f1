"""Bank-vectorised unlearning (unlearnflow.core.lockstep): every fine-tuning method run over a bank
of models at once gives each model exactly what running the method on that model alone gives
(bitwise for the digits MLP at one thread, within a stated tolerance for a conv net), its
training really runs stacked, per-model early stopping is kept, and errors reach the caller."""

import copy
import threading

import numpy as np
import pytest
import torch

from unlearnflow.core import ensemble, lockstep
from unlearnflow.core.data import load_dataset
from unlearnflow.core.ensemble import fit_many
from unlearnflow.core.forget_sets import build_forget_set
from unlearnflow.core.models import build_model
from unlearnflow.core.training import TrainConfig, clock, cross_entropy_loss, fit, model_seed, predict_logits
from unlearnflow.methods.common import negated
from unlearnflow.methods.request import ForgetRequest, UnlearningRequest
from unlearnflow.pgu.gradient_space import Factorisation
from unlearnflow.registry import METHODS
from unlearnflow.runner import apply_method

#: every method that trains through fit (JiT and the adversarial method run their own loops, SSD
#: trains nothing, TRGP's trust region is a forward hook: under the lockstep they run model after
#: model; tested at the end and in tests/test_pgu.py)
THROUGH_FIT = ["bad_teacher", "dmm", "gradient_ascent", "gradient_descent", "l1_sparse", "neggrad_plus",
               "noisy_descent", "oracle_matching", "partial_retrain", "pgu", "pgu_tuned", "random_labels",
               "random_labels_forget", "salun", "scrub"]
N_MODELS = 4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bank():
    """Four digits MLPs (different seeds), each with its request: 20 forgotten points, retain set,
    per-model target logits (DMM / OM) and the model's own gradient space (PGU)."""
    ds = load_dataset({"loader": "digits"})
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    seeds = [model_seed(0, "lockstep", i) for i in range(N_MODELS)]
    models, _ = fit_many(lambda: build_model("mlp", ds.input_shape, 10, hidden=[32]), seeds, x, y,
                         np.ones((N_MODELS, len(x)), bool), TrainConfig(lr=0.1, epochs=10, batch_size=32))
    order = np.random.default_rng(0).permutation(len(x))
    forget, retain = (torch.from_numpy(np.sort(part)) for part in (order[:20], order[20:]))
    validation = dict(validation_inputs=torch.from_numpy(ds.x_val), validation_labels=torch.from_numpy(ds.y_val))
    x_forget, y_forget = x[forget], y[forget]  # one tensor for all models, as the runner's requests share it
    requests = []
    for k, model in enumerate(models):
        targets = predict_logits(model, x) * (1.1 + 0.1 * k)  # a different target per model
        space = Factorisation.of(model, x)
        requests.append({
            False: UnlearningRequest.of_training_set(x, y, forget, retain, 10, side={"targets": targets}, **validation),
            True: ForgetRequest(forget_inputs=x_forget, forget_labels=y_forget, num_classes=10,
                                side={"gradient_space": space}, **validation)})
    return models, seeds, requests, ds


def run(bank, method, vectorised, hp=None):
    """`vectorised`: the bank at once, else one model after the other (models_per_pass 1)."""
    """The method on every model of the bank; (models, results)."""
    models, seeds, requests, _ = bank
    copies = [copy.deepcopy(model) for model in models]
    spec = METHODS[method]
    work = [lambda k=k: spec.unlearn(copies[k], requests[k][spec.source_free], hp or {}, seeds[k])
            for k in range(len(copies))]
    return copies, lockstep.run_lockstep(work, 0 if vectorised else 1)


@pytest.mark.parametrize("method", THROUGH_FIT)
def test_every_fine_tuning_method_over_the_bank_equals_the_per_model_loop_bitwise(bank, method, monkeypatch):
    alone, alone_results = run(bank, method, vectorised=False)
    stacked_calls = []
    monkeypatch.setattr(lockstep, "fit_stacked", lambda models, *args: stacked_calls.append(len(models))
                        or ensemble.fit_stacked(models, *args))
    together, results = run(bank, method, vectorised=True)
    assert stacked_calls and all(n > 1 for n in stacked_calls), "the training ran model by model"
    for a, b in zip(alone, together):
        for name, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[name]), name
    assert all(any(not torch.equal(p, q) for p, q in zip(a.parameters(), original.parameters()))
               for a, original in zip(alone, bank[0])), "a model did not move"
    for a, b in zip(alone_results, results):
        assert (a.cost.steps, a.cost.examples) == (b.cost.steps, b.cost.examples)
        assert b.cost.seconds > 0
        if a.certificate is not None:  # PGU: the same epochs, stopping reasons and kept norms
            drop = ("downdate_seconds",)
            assert {k: v for k, v in a.certificate.items() if k not in drop} == \
                   {k: v for k, v in b.certificate.items() if k not in drop}


def test_pgu_keeps_each_models_own_early_stop(bank, monkeypatch):
    """pgu_tuned stops models at different epochs; stacked loops run only the models still going."""
    stacked = []
    monkeypatch.setattr(lockstep, "fit_stacked", lambda models, *args: stacked.append(len(models))
                        or ensemble.fit_stacked(models, *args))
    _, results = run(bank, "pgu_tuned", vectorised=True, hp={"lr": 3.0})
    epochs = sorted(result.certificate["epochs"] for result in results)
    assert len(set(epochs)) > 1, epochs
    # epoch e's loop stacks the models that ran more than e epochs (a last one alone runs through fit)
    going = [sum(epoch > e for epoch in epochs) for e in range(max(epochs))]
    assert stacked == [n for n in going if n > 1], (stacked, epochs)


def test_the_workflows_runner_gives_the_same_banks_both_ways(bank):
    """apply_method (the runner of the unlearn jobs) over two configurations and a two-request sequence."""
    models, _, _, ds = bank
    from unlearnflow.core.artifacts import ModelBank
    state = {name: np.stack([m.state_dict()[name].numpy() for m in models]) for name in models[0].state_dict()}
    originals = ModelBank(weights=state, model_ids=np.arange(N_MODELS), seeds=np.arange(N_MODELS),
                          train_masks=np.ones((N_MODELS, len(ds.y_train)), bool), logits={},
                          attrs={"arch": "mlp", "model_options": {"hidden": [32]}})
    forget_set = build_forget_set("seq", {"kind": "incremental", "size": 20, "requests": 2}, ds.x_train, ds.y_train, seed=0)
    method_config = {"grid": {"lr": [0.01, 0.05]}}
    alone = apply_method("gradient_descent", originals, ds, forget_set, method_config, models_per_pass=1)
    together = apply_method("gradient_descent", originals, ds, forget_set, method_config)
    in_passes = apply_method("gradient_descent", originals, ds, forget_set, method_config, models_per_pass=3)
    assert set(alone) == set(together) and len(alone) == 3
    for label in alone:
        assert len(alone[label]) == 2
        for a, b, c in zip(alone[label], together[label], in_passes[label]):
            assert all(np.array_equal(a.weights[name], b.weights[name]) for name in a.weights)
            assert all(np.array_equal(a.weights[name], c.weights[name]) for name in a.weights)
            assert all(np.array_equal(a.logits[split], b.logits[split]) for split in a.logits)
            assert a.attrs["unlearn_examples_per_model"] == b.attrs["unlearn_examples_per_model"]


def test_a_conv_net_matches_within_tolerance():
    """SmallVGG with BatchNorm (frozen while fine-tuning): vmap's grouped convolutions round
    differently from one model's convolution, so the banks agree to float32 rounding, not bitwise."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    seeds = [model_seed(0, "vgg", i) for i in range(3)]
    models, _ = fit_many(lambda: build_model("smallvgg", (1, 8, 8), 3, width=4), seeds, x, y,
                         np.ones((3, 64), bool), TrainConfig(lr=0.05, epochs=2, batch_size=16))
    request = UnlearningRequest.of_training_set(x, y, torch.arange(8), torch.arange(8, 64), 3)
    results = {}
    for vectorised in (False, True):
        copies = [copy.deepcopy(m) for m in models]
        lockstep.run_lockstep([lambda k=k: METHODS["scrub"].unlearn(copies[k], request, {"epochs": 3, "lr": 0.05}, seeds[k])
                               for k in range(3)], 0 if vectorised else 1)
        results[vectorised] = copies
    for a, b, original in zip(results[False], results[True], models):
        moved = max(float((p - q).abs().max()) for p, q in zip(a.state_dict().values(), original.state_dict().values()))
        gap = max(float((p - q).abs().max()) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
        assert moved > 1e-2 and gap < 1e-4 * moved, (moved, gap)
        assert torch.allclose(predict_logits(a, x), predict_logits(b, x), atol=1e-5)


def test_methods_with_their_own_loop_run_model_after_model_with_the_same_result(bank):
    for method in ("jit", "ssd"):
        alone, _ = run(bank, method, vectorised=False)
        together, _ = run(bank, method, vectorised=True)
        for a, b in zip(alone, together):
            assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values())), method


def test_calls_that_cannot_share_a_loop_run_alone_and_losses_are_compared_by_value():
    ce, other = negated(cross_entropy_loss()), negated(cross_entropy_loss())
    assert lockstep.same_function(ce, other)
    assert not lockstep.same_function(ce, cross_entropy_loss())
    assert not lockstep.same_function(negated(cross_entropy_loss(0.1)), other)

    class Scaled:
        def __init__(self, factor):
            self.factor = factor

        def loss(self, logits, targets):
            return self.factor * cross_entropy_loss()(logits, targets)

    assert not lockstep.same_function(Scaled(1.0).loss, Scaled(2.0).loss)  # bound to different objects
    one = Scaled(1.0)
    assert lockstep.same_function(one.loss, one.loss)
    assert not lockstep.same_function(lambda a, b, *, w=1.0: w * a.sum(), lambda a, b, *, w=2.0: w * a.sum())
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    models = [torch.nn.Sequential(torch.nn.Linear(5, 3)) for _ in range(3)]
    config = TrainConfig(lr=0.1, epochs=2, batch_size=8, batchnorm="frozen", schedule="constant")
    sizes = [20, 20, 10]  # the third model's subset has another size: it trains alone
    copies = [copy.deepcopy(m) for m in models]
    lockstep.run_lockstep([lambda k=k: fit(copies[k], x, y, config, k, subset=torch.arange(sizes[k]))
                           for k in range(3)])
    for k, model in enumerate(models):
        fit(model, x, y, config, k, subset=torch.arange(sizes[k]))
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), copies[k].parameters()))


def test_an_error_in_one_task_reaches_the_caller_and_the_others_end():
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    config = TrainConfig(lr=0.1, epochs=1, batch_size=8, batchnorm="frozen", schedule="constant")

    def task(k):
        model = torch.nn.Linear(4, 2)
        fit(model, x, y, config, k)
        if k == 1:
            raise ValueError("model 1 failed")
        fit(model, x, y, config, k)
        return k

    threads = threading.active_count()
    with pytest.raises(ValueError, match="model 1 failed"):
        lockstep.run_lockstep([lambda k=k: task(k) for k in range(3)])
    assert threading.active_count() == threads  # every task ended
    assert lockstep.run_lockstep([lambda k=k: k for k in range(3)]) == [0, 1, 2]
    assert lockstep.run_lockstep([lambda k=k: k for k in range(5)], models_per_pass=2) == [0, 1, 2, 3, 4]
    assert lockstep.run_lockstep([]) == []


def test_a_grouping_error_unwinds_every_task(monkeypatch):
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    config = TrainConfig(lr=0.1, epochs=1, batch_size=8, batchnorm="frozen", schedule="constant")
    monkeypatch.setattr(lockstep, "_groups", lambda calls: 1 / 0)
    threads = threading.active_count()
    with pytest.raises(ZeroDivisionError):
        lockstep.run_lockstep([lambda k=k: fit(torch.nn.Linear(4, 2), x, y, config, k) for k in range(3)])
    assert threading.active_count() == threads


def test_a_tasks_clock_counts_its_share_of_the_stacked_loop():
    """Each of the four tasks is charged a quarter of the one stacked loop, on its fit's stats and
    on its own clock, which runs only while the task does."""
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    config = TrainConfig(lr=0.1, epochs=5, batch_size=8, batchnorm="frozen", schedule="constant")
    loops = []
    real = lockstep.fit_stacked

    def timed(*args):
        start = clock()
        stats = real(*args)
        loops.append(clock() - start)
        return stats

    def task(k):
        start = clock()
        stats = fit(torch.nn.Linear(4, 2), x, y, config, k)
        return stats.seconds, clock() - start

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lockstep, "fit_stacked", timed)
        charged = lockstep.run_lockstep([lambda k=k: task(k) for k in range(4)])
    assert len(loops) == 1
    assert all(share == charged[0][0] for share, _ in charged)
    assert charged[0][0] == pytest.approx(loops[0] / 4, rel=0.05)
    assert all(share <= own < share + loops[0] / 4 for share, own in charged)


def test_a_task_computes_as_the_calling_thread_does():
    """A task's small matrix products round as the caller's: a new thread would otherwise start
    with OpenMP's default thread count, under which MKL takes other kernels (measured: a 10 x 64
    linear layer differed in the last bits, which moved PGU's downdated bases)."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(10, 64), torch.randn(64, 64), torch.randn(64)
    here = torch.nn.functional.linear(x, weight, bias)
    there = lockstep.run_lockstep([lambda: torch.nn.functional.linear(x, weight, bias)] * 2)
    assert all(torch.equal(here, result) for result in there)
