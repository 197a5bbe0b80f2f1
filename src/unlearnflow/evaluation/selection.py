"""Which configuration of a method the report shows on a forget set, chosen without that set's oracles.

Every configuration of a method (its hyper-parameter grid) is evaluated on every forget set.
Choosing, on forget set S, the configuration of lowest selection score against S's own oracles
(the DMM paper's practice, kept as ``insample_best``) lets the oracles that then score the
result pick it: the larger the grid, the more optimistic the score, and a method sold as
source-free would need the retrained models of the request itself to set its learning rate. The
*headline* configuration (``selected``) is chosen the way a user picks hyper-parameters for a new
request, from past ones (issue 18, item 4):

1. With a selection set NAME (config ``evaluation.selection.forget_set``): the configuration of
   best selection score on NAME, among those within the accuracy guard there, is the pick for
   every forget set (rule ``selection_set:NAME``); on NAME itself that pick is in-sample, and the
   rule says so (``in_sample:NAME``).
2. Else, with at least two forget sets, leave the judged one out (``leave_one_out``): the
   configuration of best mean selection score over the *other* forget sets.
3. Else (one forget set and no selection set) the default configuration (``default:no_heldout_set``).

The score is each row's ``selection_score``: the W1 of margins over the oracles' spread
(:mod:`unlearnflow.metrics.wasserstein`, ``selection_metric`` ``w1``), which added spread and
collapse cannot lower, as they lower KLOM (issue 23); evaluations written before it scored KLOM
(``selection_metric`` ``klom``), and one selection never mixes the two.

A configuration qualifies on a set when it did not diverge there and keeps test accuracy within
``accuracy_guard`` (default half a point) of the oracles' (:func:`within_guard`); it must qualify
on every set it is chosen on. A sequence (incremental set NAME, evaluated as NAME@1..NAME@R) is
one forget set: its prefixes are never held out for each other, and its score is the mean over
its prefixes. Ties go to the default configuration, then to the configuration evaluated first.
When no configuration qualifies the default is shown (``default:none_within_guard``); a method
with one configuration (the references ``do_nothing`` and ``retrain``) keeps it (``only_config``).
Nothing is retrained: the choice reads the evaluation rows only.

:func:`select_configurations` annotates every row with :data:`SELECTION_COLUMNS`, the same values
on every row of a (method, forget set) but the two flags.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean

from unlearnflow.core.forget_sets import split_step_name
from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import DIVERGED, Row

#: The label of a method's default configuration (the registry evaluates it first).
DEFAULT_CONFIG = "default"
#: Largest test-accuracy loss against the oracles a selectable configuration may have (half a point).
DEFAULT_ACCURACY_GUARD = 0.005
#: ``selection_rule`` values; the two set rules end with the selection set's name.
ONLY_CONFIG = "only_config"
LEAVE_ONE_OUT = "leave_one_out"
SELECTION_SET = "selection_set:"
IN_SAMPLE = "in_sample:"
NONE_WITHIN_GUARD = "default:none_within_guard"
NO_HELDOUT_SET = "default:no_heldout_set"
#: The columns :func:`select_configurations` adds to every row, in summary.csv's order.
SELECTION_COLUMNS = ("selection_rule", "heldout_config", "heldout_selection_score", "insample_config",
                     "insample_selection_score", "default_selection_score", "selected", "insample_best")


def sequence_of(forget_set: str) -> str:
    """The forget set a row's set belongs to: NAME for a prefix NAME@R of a sequence, else itself."""
    return split_step_name(forget_set)[0]


def accuracy_loss(row: Row) -> float:
    """How far the unlearned models' test accuracy falls below the oracles' (NaN-safe: 0)."""
    loss = row["acc_test_oracle"] - row["acc_test"]
    return loss if math.isfinite(loss) else 0.0


def within_guard(row: Row, accuracy_guard: float) -> bool:
    """Whether a configuration qualifies on the row's set: it did not diverge, has a selection
    score, and loses at most `accuracy_guard` of test accuracy against the oracles."""
    return (row["status"] != DIVERGED and math.isfinite(row["selection_score"])
            and accuracy_loss(row) <= accuracy_guard)


def score_key(row: Row) -> tuple[bool, float, str]:
    """Sort key by selection score, lowest first, NaN and diverged last, ties broken by config
    (the in-sample best is the first row in this order)."""
    score = row["selection_score"]
    unusable = math.isnan(score) or row["status"] == DIVERGED
    return (unusable, 0.0 if unusable else score, row["config"])


def describe_rule(rule: str) -> str:
    """A ``selection_rule`` value in words, for the report's tables."""
    if rule.startswith(SELECTION_SET):
        return f"best on selection set `{rule[len(SELECTION_SET):]}`"
    if rule.startswith(IN_SAMPLE):
        return f"in-sample (this is selection set `{rule[len(IN_SAMPLE):]}`)"
    return {ONLY_CONFIG: "only configuration", LEAVE_ONE_OUT: "best on the other forget sets",
            NONE_WITHIN_GUARD: "default (none within the accuracy guard)",
            NO_HELDOUT_SET: "default (no other forget set)"}[rule]


#: sequence -> forget set -> config -> row, of one method
_Table = Mapping[str, Mapping[str, Mapping[str, Row]]]


def select_configurations(rows: Sequence[Row], accuracy_guard: float = DEFAULT_ACCURACY_GUARD,
                          selection_set: str | None = None) -> list[Row]:
    """Annotate every row in place with :data:`SELECTION_COLUMNS` and return the rows.

    Per (method, forget set): ``selection_rule`` and ``heldout_config``, the held-out choice (see
    the module's description) and ``heldout_selection_score``, its score on the set;
    ``insample_config`` and ``insample_selection_score``, the configuration of lowest score on the
    set itself (a diverged one only when all diverged); ``default_selection_score``. Per row: ``selected`` (the
    row is the held-out choice, the report's headline) and ``insample_best``. A `selection_set`
    with no evaluated row, or a negative `accuracy_guard`, is a UserError.
    """
    if not accuracy_guard >= 0:
        raise UserError(f"evaluation.accuracy_guard must be a number >= 0, got {accuracy_guard}")
    metrics = sorted({row.get("selection_metric", "") for row in rows})
    if len(metrics) > 1:
        raise UserError(f"the evaluations score configurations with different selection metrics ({', '.join(metrics)}): "
                        "rerun the older evaluations")
    if selection_set is not None and selection_set not in {sequence_of(row["forget_set"]) for row in rows}:
        raise UserError(f"selection set '{selection_set}' has no evaluated rows; it must be one of the "
                        "experiment's forget sets")
    tables: dict[str, dict[str, dict[str, dict[str, Row]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        tables[row["method"]][sequence_of(row["forget_set"])].setdefault(row["forget_set"], {})[row["config"]] = row
    for table in tables.values():
        for sequence, sets in table.items():
            for by_config in sets.values():
                _annotate(by_config, *_heldout_choice(table, sequence, list(by_config), accuracy_guard, selection_set))
    return list(rows)


def _default_of(configs: Sequence[str]) -> str:
    """The default configuration among `configs`, or the first evaluated one without it."""
    return DEFAULT_CONFIG if DEFAULT_CONFIG in configs else configs[0]


def _heldout_choice(table: _Table, judged: str, configs: Sequence[str], accuracy_guard: float,
                    selection_set: str | None) -> tuple[str, str]:
    """(configuration, rule) of a method on a forget set of sequence `judged`, among the
    `configs` evaluated there."""
    default = _default_of(configs)
    if len(configs) == 1:
        return default, ONLY_CONFIG
    if selection_set is not None:
        basis = [selection_set]
        rule = (IN_SAMPLE if judged == selection_set else SELECTION_SET) + selection_set
    else:
        basis = [sequence for sequence in table if sequence != judged]
        rule = LEAVE_ONE_OUT
        if not basis:
            return default, NO_HELDOUT_SET
    scores = {}
    for config in configs:
        per_set = [_sequence_score(table.get(sequence, {}), config, accuracy_guard) for sequence in basis]
        if all(score is not None for score in per_set):
            scores[config] = fmean(per_set)
    if not scores:
        return default, NONE_WITHIN_GUARD
    return min(scores, key=lambda config: (scores[config], config != default, configs.index(config))), rule


def _sequence_score(sets: Mapping[str, Mapping[str, Row]], config: str, accuracy_guard: float) -> float | None:
    """Mean selection score of `config` over the forget sets of one sequence (one set unless it
    is a sequence's prefixes), or None when it is not evaluated or does not qualify on each."""
    found = [by_config.get(config) for by_config in sets.values()]
    if not found or any(row is None or not within_guard(row, accuracy_guard) for row in found):
        return None
    return fmean(row["selection_score"] for row in found)


def _annotate(by_config: Mapping[str, Row], chosen: str, rule: str) -> None:
    """Write the selection columns on the rows of one (method, forget set)."""
    insample = min(by_config.values(), key=score_key)
    default = by_config[_default_of(list(by_config))]
    for row in by_config.values():
        row.update(selection_rule=rule, heldout_config=chosen,
                   heldout_selection_score=by_config[chosen]["selection_score"],
                   insample_config=insample["config"], insample_selection_score=insample["selection_score"],
                   default_selection_score=default["selection_score"], selected=row["config"] == chosen,
                   insample_best=row is insample)


def headline_rows(rows: Iterable[Row]) -> list[Row]:
    """The ``selected`` rows: one per (method, forget set)."""
    return [row for row in rows if row["selected"]]
