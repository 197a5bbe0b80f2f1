"""Held-out selection of each method's headline configuration (unlearnflow.evaluation.selection)."""

import math
from pathlib import Path

import pytest

from unlearnflow.config import load_config_file, load_schema, validate_config
from unlearnflow.errors import UserError
from unlearnflow.evaluation.selection import (
    IN_SAMPLE,
    LEAVE_ONE_OUT,
    NO_HELDOUT_SET,
    NONE_WITHIN_GUARD,
    ONLY_CONFIG,
    SELECTION_COLUMNS,
    SELECTION_SET,
    select_configurations,
)

ROOT = Path(__file__).resolve().parents[1]


def row(forget_set, config, score, method="ga", acc_test=0.95, acc_test_oracle=0.95, status="ok"):
    """The columns the selection reads."""
    return {"method": method, "config": config, "forget_set": forget_set, "selection_score": score,
            "acc_test": acc_test, "acc_test_oracle": acc_test_oracle, "status": status}


def grid(scores, **columns):
    """Rows of method ga from {forget set: {config: score}}; `columns` override per (set, config)."""
    return [row(forget_set, config, score, **columns.get(f"{forget_set}/{config}", {}))
            for forget_set, by_config in scores.items() for config, score in by_config.items()]


def picks(rows):
    """(forget set, method) -> (headline config, rule), checking the flags agree with the columns."""
    out = {}
    for r in rows:
        assert set(SELECTION_COLUMNS) <= set(r)
        assert r["selected"] == (r["config"] == r["heldout_config"])
        out[r["forget_set"], r["method"]] = (r["heldout_config"], r["selection_rule"])
    return out


def test_leave_one_out_picks_on_the_other_sets_where_the_in_sample_best_differs():
    rows = select_configurations(grid({"a": {"default": 3.0, "lr=1": 2.0, "lr=9": 2.5},
                                       "b": {"default": 3.0, "lr=1": 4.0, "lr=9": 2.6},
                                       "c": {"default": 3.0, "lr=1": 4.0, "lr=9": 2.4}}))
    # on a: lr=9 has the best mean over b and c (2.5) although lr=1 is best on a itself
    assert picks(rows)["a", "ga"] == ("lr=9", LEAVE_ONE_OUT)
    on_a = {r["config"]: r for r in rows if r["forget_set"] == "a"}
    assert on_a["lr=9"]["selected"] and not on_a["lr=9"]["insample_best"]
    assert on_a["lr=1"]["insample_best"] and not on_a["lr=1"]["selected"]
    assert (on_a["default"]["heldout_selection_score"], on_a["default"]["insample_config"],
            on_a["default"]["insample_selection_score"], on_a["default"]["default_selection_score"]) == (2.5, "lr=1",
                                                                                                         2.0, 3.0)
    # on b: the mean over a and c is 2.45 for lr=9, 3.0 for lr=1 and default
    assert picks(rows)["b", "ga"] == ("lr=9", LEAVE_ONE_OUT)


def test_the_guard_excludes_a_configuration_that_loses_accuracy_on_another_set():
    scores = {"a": {"default": 3.0, "lr=1": 1.0}, "b": {"default": 3.0, "lr=1": 1.0}}
    loses_on_b = {"b/lr=1": {"acc_test": 0.94, "acc_test_oracle": 0.95}}  # one point below the oracles
    assert picks(select_configurations(grid(scores, **loses_on_b)))["a", "ga"] == ("default", LEAVE_ONE_OUT)
    # half a point is within the default guard; a wider guard admits the whole point
    within = {"b/lr=1": {"acc_test": 0.946, "acc_test_oracle": 0.95}}
    assert picks(select_configurations(grid(scores, **within)))["a", "ga"] == ("lr=1", LEAVE_ONE_OUT)
    assert picks(select_configurations(grid(scores, **loses_on_b), accuracy_guard=0.02))["a", "ga"] == (
        "lr=1", LEAVE_ONE_OUT)
    # on b itself the loss there does not matter: it is judged on a, where lr=1 keeps its accuracy
    assert picks(select_configurations(grid(scores, **loses_on_b)))["b", "ga"] == ("lr=1", LEAVE_ONE_OUT)


def test_a_diverged_configuration_is_never_picked_and_none_qualifying_gives_the_default():
    scores = {"a": {"default": 3.0, "lr=1": 1.0, "lr=1e30": math.nan},
              "b": {"default": 3.0, "lr=1": 1.0, "lr=1e30": math.nan}}
    diverged = {f"{s}/lr=1e30": {"status": "diverged"} for s in "ab"}
    rows = select_configurations(grid(scores, **diverged))
    assert picks(rows)["a", "ga"] == ("lr=1", LEAVE_ONE_OUT)
    assert all(not r["insample_best"] for r in rows if r["config"] == "lr=1e30")
    unusable = {f"{s}/{c}": {"acc_test": 0.5} for s in "ab" for c in ("default", "lr=1")}
    rows = select_configurations(grid(scores, **diverged, **unusable))
    assert picks(rows)["a", "ga"] == ("default", NONE_WITHIN_GUARD)
    assert next(r for r in rows if r["selected"])["heldout_selection_score"] == 3.0


def test_ties_go_to_the_default():
    scores = {"a": {"lr=1": 2.0, "default": 2.0, "lr=3": 2.0}, "b": {"lr=1": 2.0, "default": 2.0, "lr=3": 2.0}}
    assert picks(select_configurations(grid(scores)))["a", "ga"] == ("default", LEAVE_ONE_OUT)


def test_a_single_forget_set_without_a_selection_set_gives_the_default_and_references_keep_theirs():
    rows = grid({"a": {"default": 3.0, "lr=1": 1.0}}) + [row("a", "default", 5.0, method="do_nothing")]
    chosen = picks(select_configurations(rows))
    assert chosen["a", "ga"] == ("default", NO_HELDOUT_SET)
    assert chosen["a", "do_nothing"] == ("default", ONLY_CONFIG)
    assert [r["insample_best"] for r in rows] == [False, True, True]


def test_a_selection_set_chooses_for_every_set_and_is_in_sample_on_itself():
    scores = {"sel": {"default": 3.0, "lr=1": 2.0, "lr=9": 2.5},
              "a": {"default": 3.0, "lr=1": 4.0, "lr=9": 1.0},
              "b": {"default": 3.0, "lr=1": 4.0, "lr=9": 1.0}}
    chosen = picks(select_configurations(grid(scores), selection_set="sel"))
    assert chosen["a", "ga"] == chosen["b", "ga"] == ("lr=1", SELECTION_SET + "sel")
    assert chosen["sel", "ga"] == ("lr=1", IN_SAMPLE + "sel")
    # leaving one out instead, a and b vote for lr=9 everywhere
    assert picks(select_configurations(grid(scores)))["sel", "ga"] == ("lr=9", LEAVE_ONE_OUT)
    # the guard applies on the selection set
    loses = {"sel/lr=1": {"acc_test": 0.9}}
    assert picks(select_configurations(grid(scores, **loses), selection_set="sel"))["a", "ga"] == (
        "lr=9", SELECTION_SET + "sel")


def test_the_prefixes_of_a_sequence_are_one_forget_set_never_held_out_for_each_other():
    # lr=1 is best on every prefix of the sequence, lr=9 on the other set r
    scores = {"seq@1": {"default": 3.0, "lr=1": 1.0, "lr=9": 2.9},
              "seq@2": {"default": 3.0, "lr=1": 1.0, "lr=9": 2.9},
              "r": {"default": 3.0, "lr=1": 2.5, "lr=9": 2.0}}
    chosen = picks(select_configurations(grid(scores)))
    assert chosen["seq@1", "ga"] == chosen["seq@2", "ga"] == ("lr=9", LEAVE_ONE_OUT)
    # on r the sequence is one set: the mean over its prefixes, and the guard on each of them
    assert chosen["r", "ga"] == ("lr=1", LEAVE_ONE_OUT)
    loses_on_one_prefix = {"seq@2/lr=1": {"acc_test": 0.9}}
    assert picks(select_configurations(grid(scores, **loses_on_one_prefix)))["r", "ga"] == ("lr=9", LEAVE_ONE_OUT)
    # a selection set names the sequence: its prefixes' mean chooses, in-sample on each prefix
    chosen = picks(select_configurations(grid(scores), selection_set="seq"))
    assert chosen["r", "ga"] == ("lr=1", SELECTION_SET + "seq") and chosen["seq@2", "ga"] == ("lr=1", IN_SAMPLE + "seq")


def test_a_wrong_selection_set_or_guard_is_a_user_error():
    rows = grid({"a": {"default": 3.0}})
    with pytest.raises(UserError, match="selection set 'b' has no evaluated rows"):
        select_configurations(rows, selection_set="b")
    with pytest.raises(UserError, match="accuracy_guard must be a number >= 0"):
        select_configurations(rows, accuracy_guard=-0.1)


@pytest.mark.parametrize("evaluation, message", [
    ({"selection": {"forget_set": "random_11"}},
     "config: evaluation.selection.forget_set: 'random_11' is not a forget set of experiment digits (random_10, "),
    ({"accuracy_guard": -0.01}, "config: evaluation.accuracy_guard: -0.01 is less than the minimum of 0"),
    ({"selection": {}}, "config: evaluation.selection: 'forget_set' is a required property"),
])
def test_the_config_refuses_a_selection_set_that_is_not_a_forget_set(evaluation, message):
    config = load_config_file(ROOT / "config.yaml")
    config.pop("experiments")
    config["evaluation"].update(evaluation)
    with pytest.raises(UserError) as error:
        validate_config(config, load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_default_config_has_the_default_guard_and_no_selection_set():
    config = load_config_file(ROOT / "config.yaml")
    config.pop("experiments")
    evaluation = validate_config(config, load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml"))[
        "evaluation"]
    assert evaluation["accuracy_guard"] == 0.005 and "selection" not in evaluation
