"""The source-free fit's identifiability check (issue 23): a configuration that cannot identify the
Hessian block is refused (when none can) or marked, never silently run."""

import math

import numpy as np
import pytest

from unlearnflow.core.data import load_dataset
from unlearnflow.core.forget_sets import build_forget_set
from unlearnflow.errors import UserError
from unlearnflow.evaluation.evaluate import evaluate
from unlearnflow.report.summary import identification_note
from unlearnflow.runner import apply_method
from unlearnflow.sourcefree.features import average_pool
from unlearnflow.sourcefree.identifiability import (
    block_size,
    check_configurations,
    largest_identified_block,
    perturbations_needed,
)
from unlearnflow.sourcefree.linear import LinearObjective, identity_features, train_linear_bank


def test_the_counts():
    assert perturbations_needed(16) == 136 and perturbations_needed(196) == 19_306
    assert block_size("squared", (10, 16)) == 16 and block_size("multinomial", (10, 16)) == 160
    assert block_size("mixed_squared", (1, 40)) == 40  # a mixed-linear model's linearised parameters
    for m in (1, 135, 136, 500, 19_306):
        p = largest_identified_block(m)
        assert perturbations_needed(p) <= m < perturbations_needed(p + 1)


def test_a_method_none_of_whose_configurations_identifies_is_refused_in_one_line():
    """The issue's case: 28x28 images pooled 2x2 (d = 196) with the default m = 500 and the variants' grid."""
    configs = [(label, {"m": 500, "loss": "squared"}, (10, 196)) for label in ("default", "variant=corrected")]
    with pytest.raises(UserError) as error:
        check_configurations(configs, 196)
    message = str(error.value)
    assert "\n" not in message and "196 x 196" in message and "19,306" in message
    assert "set hyperparameters.m >= 19306" in message and "at most 31" in message
    # the multinomial loss couples the classes: 16 features are a 160 x 160 block, 12,880 unknowns
    with pytest.raises(UserError, match="160 x 160 Hessian block of 16 features .* hyperparameters.m >= 12880$"):
        check_configurations([("default", {"m": 500, "loss": "multinomial"}, (10, 16))], 16)
    # a mixed-linear model: rows of width K (1 + P) = 410, a 40 x 40 block, 820 unknowns
    assert check_configurations([("default", {"m": 1640, "loss": "mixed_squared"}, (1, 40))], 410) == []


def test_a_sweep_that_partly_identifies_runs_with_a_warning_per_short_configuration():
    configs = [("default", {"m": 2208, "loss": "squared"}, (10, 64)), ("m=250", {"m": 250, "loss": "squared"}, (10, 64)),
               ("m=1000", {"m": 1000, "loss": "squared"}, (10, 64))]
    warnings = check_configurations(configs, 64)
    assert len(warnings) == 2 and "[m=250]" in warnings[0] and "[m=1000]" in warnings[1]
    assert "2,080" in warnings[0]
    assert check_configurations([("default", {"m": 500, "loss": "squared"}, (10, 16))], 16) == []


@pytest.fixture(scope="module")
def digits_banks(one_thread):
    """Linear banks on digits at full resolution (d = 64, 2,080 unknowns) and pooled 2x2 (d = 16, 136)."""
    out = {}
    for pool in (1, 2):
        features = identity_features(average_pool(load_dataset({"loader": "digits", "max_train": 600}), pool))
        n = len(features.y_train)
        forget_set = build_forget_set("r", {"kind": "random", "size": n // 10}, features.x_train, features.y_train,
                                      seed=0)
        objective = LinearObjective("squared", 1e-3)
        originals = train_linear_bank(features, objective, 0.1, [11, 12, 13, 14])
        oracles = train_linear_bank(features, objective, 0.1, [11, 12, 13, 14], role="retrain",
                                    train_mask=forget_set.retain_mask(n))
        out[pool] = features, forget_set, originals, oracles
    return out


def test_the_workflow_path_refuses_or_marks_and_the_report_says_so(digits_banks, capsys):
    features, forget_set, originals, _ = digits_banks[1]
    with pytest.raises(UserError, match="m = 500 perturbations cannot identify the 64 x 64 Hessian block"):
        apply_method("newton_source_free", originals, features, forget_set, {"grid": {"variant": ["corrected"]}})
    # pooled 2x2 (the default run's features): m = 100 does not identify, m = 500 does
    features, forget_set, originals, oracles = digits_banks[2]
    banks = apply_method("newton_source_free", originals, features, forget_set,
                         {"hyperparameters": {"max_iters": 200}, "grid": {"m": [100]}})
    assert "warning: newton_source_free [m=100]: m = 100 perturbations cannot identify" in capsys.readouterr().out
    rows = {label: evaluate(features, forget_set, originals, oracles, steps[-1], "newton_source_free", label,
                            n_boot=0).row for label, steps in banks.items()}
    assert rows["default"]["hessian_identified"] == 1 and rows["m=100"]["hessian_identified"] == 0
    assert identification_note(rows["default"]) == ""
    assert "Hessian not identified" in identification_note(rows["m=100"])
    certified = apply_method("newton_certified", originals, features, forget_set, {})["default"][-1]
    row = evaluate(features, forget_set, originals, oracles, certified, "newton_certified", n_boot=0).row
    assert math.isnan(row["hessian_identified"]) and identification_note(row) == ""
    assert np.isfinite(rows["m=100"]["weight_distance"])
