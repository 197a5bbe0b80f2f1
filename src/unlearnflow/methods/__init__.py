"""The request type (:mod:`.request`) and the baseline unlearning methods, each a module with
``unlearn(model, request, hyperparameters, seed) -> MethodResult`` (their defaults and grids are
in :mod:`.declarations`, which imports no torch):

- ``gradient_ascent``: GA, DMM paper Appendix D.4 (II), ascend CE on the forget set (source-free);
- ``gradient_descent``: GD, Appendix D.4 (III), descend CE on the retain set;
- ``neggrad_plus``: NegGrad+ (Kurmanji et al. 2023), ``beta CE(retain) - (1 - beta) CE(forget)``;
- ``random_labels``: fine-tune on the forget set relabelled at random (and optionally the retain set);
  ``random_labels_forget`` is its forget-only, source-free form (the source-free paper's Table 5);
- ``jit``: JiT (Foster et al. 2024), minimise the local Lipschitz constant around each forget sample (source-free);
- ``scrub``: SCRUB (Kurmanji et al. 2023), Appendix D.4 (IV), max/min KL to a frozen teacher;
- ``partial_retrain``: Appendix D.4 (I), train from scratch on the retain set for fewer epochs;
- ``adversarial``: Cha et al. 2024, ascent on the forget samples held by adversarial anchors and weight
  importance (source-free; the source-free paper's Table 5 "Adversarial");
- ``l1_sparse``: Jia et al. 2023, retain fine-tuning with a decaying l1 penalty;
- ``ssd``: Foster et al. 2024, Selective Synaptic Dampening, no training;
- ``salun``: Fan et al. 2024, random labels on the weights most salient to the forget loss;
- ``bad_teacher``: Chundawat et al. 2023, distillation from the original on retain points and a random model on
  forget points;
- ``noisy_descent``: the DMM authors' benchmark baseline, retain fine-tuning with clipped, noised gradients.

Every method but JiT (whose loss compares outputs on perturbed inputs), Adversarial (its own
loop with a stopping rule per step) and SSD (no training) trains through
:func:`unlearnflow.core.training.fit`; fine-tuning keeps BatchNorm
statistics frozen (:mod:`.common`). The papers' own methods live in their packages
(:mod:`unlearnflow.dmm`, ...); :mod:`unlearnflow.registry` lists them all.
"""
