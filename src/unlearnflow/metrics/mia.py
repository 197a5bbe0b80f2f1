"""Membership inference attacks (MIA) used as unlearning read-outs.

Two attacks:

- :func:`simple_mia`, the loss-threshold attack of SCRUB (Kurmanji et al., 2023) and of the
  NeurIPS 2023 unlearning challenge starting kit: can a logistic regression on per-example
  losses tell forget points from test points? Accuracy 0.5 means no.
- :func:`pgu_mia`, the attack of the PGU paper (Section 4.1, read-out iv): an XGBoost
  classifier trained to tell the forget-set outputs of models trained on all data (members)
  from those of models retrained without the forget set (non-members)
  (:func:`fit_pgu_attack`), then applied to the outputs of unlearned models (:func:`judge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgboost
from scipy.special import expit, logsumexp, softmax
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold

from unlearnflow.errors import UserError
from unlearnflow.metrics.readouts import check_logits

#: XGBoost settings of the PGU reference code (notes: reference-implementations.md).
PGU_XGB_PARAMS = {"learning_rate": 0.2, "max_depth": 10, "subsample": 0.8, "reg_lambda": 10, "min_child_weight": 0.1}


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy ``logsumexp(logits) - logit_y`` of each point; shape ``logits.shape[:-1]``."""
    logits, labels = check_logits(logits, labels)
    index = np.broadcast_to(labels[:, None], logits.shape[:-1] + (1,))
    return logsumexp(logits, axis=-1) - np.take_along_axis(logits, index, axis=-1)[..., 0]


def _check_losses(losses: np.ndarray, name: str) -> np.ndarray:
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or not np.isfinite(losses).all():
        raise UserError(f"{name} must be a 1-D array of finite losses, got shape {losses.shape}")
    return losses


def simple_mia(forget_losses: np.ndarray, test_losses: np.ndarray, rng: np.random.Generator, n_splits: int = 5) -> float:
    """Mean cross-validated accuracy of a loss-based member / non-member classifier.

    `forget_losses` (members: points the original model was trained on) and `test_losses`
    (non-members) are per-example losses of one model, see :func:`per_example_loss`. The larger
    set is subsampled with `rng` to the size of the smaller, so chance is exactly 0.5; a
    logistic regression on the loss is scored by `n_splits`-fold stratified cross-validation.
    Ideal unlearning gives about 0.5 (like a model that never saw the forget set); a model
    that still fits the forget set gives more. The loss is standardised inside each fold (the
    kit fits the raw loss; for one feature this only changes how strongly the default L2
    penalty acts). The classifier is scikit-learn's default ``LogisticRegression`` (L2, C = 1,
    unpenalised intercept), fitted by :func:`fit_one_feature_logistic` to the same optimum at
    a fraction of the cost (the evaluation runs this attack for every model and configuration).
    """
    forget = _check_losses(forget_losses, "forget_losses")
    test = _check_losses(test_losses, "test_losses")
    n = min(forget.size, test.size)
    if n < n_splits:
        raise UserError(f"simple_mia needs at least {n_splits} forget and test losses, got {forget.size} and {test.size}")
    forget = forget[rng.choice(forget.size, n, replace=False)]
    test = test[rng.choice(test.size, n, replace=False)]
    features = np.concatenate([forget, test])
    members = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=_seed(rng))
    accuracies = []
    for train, held_out in folds.split(features[:, None], members):
        mean, std = features[train].mean(), features[train].std()
        scale = std if std > 0 else 1.0  # StandardScaler leaves a constant feature unscaled
        weight, intercept = fit_one_feature_logistic((features[train] - mean) / scale, members[train])
        predicted = weight * (features[held_out] - mean) / scale + intercept > 0
        accuracies.append(np.mean(predicted == members[held_out]))
    return float(np.mean(accuracies))


def fit_one_feature_logistic(z: np.ndarray, y: np.ndarray, tol: float = 1e-12, max_iters: int = 100) -> tuple[float, float]:
    """(w, b) minimising ``sum_i log(1 + exp(-s_i (w z_i + b))) + w^2 / 2`` with ``s_i = 2 y_i - 1``:
    scikit-learn's default logistic regression on one feature, solved by damped Newton steps
    (the objective is strictly convex in (w, b) when both classes are present)."""
    signs = 2.0 * y - 1.0
    theta = np.zeros(2)
    design = np.stack([z, np.ones_like(z)], axis=1)

    def objective(theta: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -signs * (design @ theta)).sum() + 0.5 * theta[0] ** 2)

    value = objective(theta)
    for _ in range(max_iters):
        margins = signs * (design @ theta)
        p = expit(-margins)                                 # d/dm log(1 + exp(-m)) = -p
        gradient = -(design * (signs * p)[:, None]).sum(0) + np.array([theta[0], 0.0])
        curvature = p * (1.0 - p)
        hessian = design.T @ (design * curvature[:, None]) + np.diag([1.0, 0.0])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        size = 1.0
        while size > 1e-10:
            candidate = objective(theta - size * step)
            if candidate <= value:
                break
            size /= 2
        theta, improvement = theta - size * step, value - candidate
        value = candidate
        if np.abs(gradient).max() < tol or improvement <= tol * max(1.0, abs(value)):
            break
    return float(theta[0]), float(theta[1])


@dataclass(frozen=True)
class PguMiaResult:
    """Outcome of :func:`judge` (and :func:`pgu_mia`).

    attack_auc: ROC-AUC of the attack on held-out models, original (members, positive) vs
        retrained (non-members); how well the attack works at all (0.5: it learned nothing).
    unlearned_auc: ROC-AUC of the attack's membership score separating unlearned-model rows
        (positive) from held-out retrained-model rows (negative): 0.5 is ideal unlearning,
        above 0.5 the unlearned models still look like members, below 0.5 they look *less*
        like members than a retrained model does (Streisand effect, PGU Section 2.3).
    fpr, tpr: the ROC curve behind `unlearned_auc` (the curve of the PGU paper's Figure 2).
    mean_membership_unlearned: mean predicted membership probability on unlearned rows.
    mean_membership_retrained: the same on held-out retrained rows, its ideal value.
    n_trees: boosting rounds kept after early stopping on the validation models.
    """

    attack_auc: float
    unlearned_auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    mean_membership_unlearned: float
    mean_membership_retrained: float
    n_trees: int


def pgu_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Attack features of PGU Section 4.1: softmax output concatenated with the one-hot label.

    `logits` (models, points, classes) gives rows (models * points, 2 * classes), model-major.
    """
    logits, labels = check_logits(logits, labels)
    if logits.ndim != 3:
        raise UserError(f"logits must have shape (models, points, classes), got {logits.shape}")
    n_models, n_points, n_classes = logits.shape
    one_hot = np.broadcast_to(np.eye(n_classes)[labels], logits.shape)
    return np.concatenate([softmax(logits, axis=-1), one_hot], axis=-1).reshape(n_models * n_points, 2 * n_classes)


def split_models(n_models: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / validation / test model indices, 80 / 10 / 10 % (at least one each).

    With the paper's 50 models per side: 40 / 5 / 5.
    """
    if n_models < 3:
        raise UserError(f"the PGU attack needs at least 3 models per side, got {n_models}")
    n_held = max(1, round(0.1 * n_models))
    order = rng.permutation(n_models)
    return order[2 * n_held :], order[:n_held], order[n_held : 2 * n_held]


def _labelled_rows(
    original: np.ndarray, retrained: np.ndarray, labels: np.ndarray, models_o: np.ndarray, models_r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of the chosen original models (label 1) and retrained models (label 0)."""
    members, others = pgu_features(original[models_o], labels), pgu_features(retrained[models_r], labels)
    return np.concatenate([members, others]), np.r_[np.ones(len(members)), np.zeros(len(others))]


@dataclass(frozen=True)
class PguAttack:
    """The trained attack of :func:`fit_pgu_attack`: it depends on the original and retrained
    models only, so one attack judges every unlearned bank of a forget set (:func:`judge`).

    classifier: the fitted ``XGBClassifier``.
    labels: the forget labels it was trained for.
    original_test_models: indices of the original models held out from its training.
    retrained_test_score: its membership score on the held-out retrained models' rows.
    attack_auc: its ROC-AUC on the held-out rows, original vs retrained.
    """

    classifier: xgboost.XGBClassifier
    labels: np.ndarray
    original_test_models: np.ndarray
    retrained_test_score: np.ndarray
    attack_auc: float


def fit_pgu_attack(
    original_logits: np.ndarray,
    retrained_logits: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    n_estimators: int = 200,
    early_stopping_rounds: int = 20,
    n_jobs: int = 2,
) -> PguAttack:
    """Train the membership inference attack of the PGU paper (Section 4.1) on the forget points.

    Inputs are logits on the forget points, (models, points, classes), of models trained on
    all data (`original`, the members) and retrained without the forget set (`retrained`, the
    non-members), plus the forget labels (points,).

    1. Each row is one (model, forget point) pair with the features of :func:`pgu_features`.
    2. Original and retrained models are each split by *model* 80/10/10 into train,
       validation and test (:func:`split_models`), so no model feeds two splits.
    3. ``XGBClassifier`` with the reference settings (:data:`PGU_XGB_PARAMS`), at most
       `n_estimators` rounds (200; the reference passes none, i.e. XGBoost's 100), keeping the
       round count with the lowest validation log-loss (early stopping after
       `early_stopping_rounds` rounds without improvement). The paper tunes on the validation
       set for F1; early stopping is the validation step here.
    4. The attack scores the test rows: its AUC original vs retrained is its own power.

    The paper uses 50 models per side. `n_jobs` is XGBoost's thread count; keep it at or below
    the free cores (oversubscribed threads make training many times slower).
    """
    original, labels = check_logits(original_logits, labels)
    retrained, _ = check_logits(retrained_logits, labels)
    if original.shape[1:] != retrained.shape[1:]:
        raise UserError(f"logits disagree on (points, classes): {original.shape}, {retrained.shape}")
    original_split, retrained_split = split_models(len(original), rng), split_models(len(retrained), rng)
    splits = zip(original_split, retrained_split)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (_labelled_rows(original, retrained, labels, o, r) for o, r in splits)
    classifier = xgboost.XGBClassifier(
        n_estimators=n_estimators,
        early_stopping_rounds=early_stopping_rounds,
        eval_metric="logloss",
        n_jobs=n_jobs,
        random_state=_seed(rng),
        **PGU_XGB_PARAMS,
    )
    classifier.fit(x_train, y_train, eval_set=[(x_val, y_val)], verbose=False)
    test_score = classifier.predict_proba(x_test)[:, 1]
    return PguAttack(classifier=classifier, labels=labels, original_test_models=original_split[2],
                     retrained_test_score=test_score[y_test == 0], attack_auc=float(roc_auc_score(y_test, test_score)))


def judge(attack: PguAttack, unlearned_logits: np.ndarray, paired_with_originals: bool = False) -> PguMiaResult:
    """Score every unlearned row (models, forget points, classes) with `attack`: the AUC and ROC
    curve of unlearned vs held-out retrained rows (PGU Figure 2).

    With ``paired_with_originals`` (unlearned model i was obtained from original model i, as for
    do-nothing and every fine-tuning method) only the unlearned models whose originals are in
    the attack's test split are attacked: the others' originals fed its training rows.
    """
    unlearned, _ = check_logits(unlearned_logits, attack.labels)
    if unlearned.shape[1:] != (len(attack.labels), attack.classifier.n_features_in_ // 2):
        raise UserError(f"unlearned logits of shape {unlearned.shape} disagree with the attack's forget points "
                        f"and classes ({len(attack.labels)}, {attack.classifier.n_features_in_ // 2})")
    if paired_with_originals:
        unlearned = unlearned[attack.original_test_models]
    unlearned_score = attack.classifier.predict_proba(pgu_features(unlearned, attack.labels))[:, 1]
    retrained_score = attack.retrained_test_score
    truth = np.r_[np.ones(unlearned_score.size), np.zeros(retrained_score.size)]
    scores = np.r_[unlearned_score, retrained_score]
    fpr, tpr, _ = roc_curve(truth, scores)
    return PguMiaResult(
        attack_auc=attack.attack_auc,
        unlearned_auc=float(roc_auc_score(truth, scores)),
        fpr=fpr,
        tpr=tpr,
        mean_membership_unlearned=float(unlearned_score.mean()),
        mean_membership_retrained=float(retrained_score.mean()),
        n_trees=int(attack.classifier.best_iteration) + 1,
    )


def pgu_mia(original_logits: np.ndarray, retrained_logits: np.ndarray, unlearned_logits: np.ndarray,
            labels: np.ndarray, rng: np.random.Generator, n_jobs: int = 2,
            paired_with_originals: bool = False) -> PguMiaResult:
    """The PGU paper's attack in one call: :func:`fit_pgu_attack` then :func:`judge`."""
    attack = fit_pgu_attack(original_logits, retrained_logits, labels, rng, n_jobs=n_jobs)
    return judge(attack, unlearned_logits, paired_with_originals)
