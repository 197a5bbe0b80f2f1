"""The DMM paper's fine-tuning methods' hyper-parameters as the config sees them, without torch
(the workflow reads them when it is parsed): Oracle Matching (:mod:`.oracle_matching`) and
Datamodel Matching (:mod:`.datamodel_matching`). DM-DIRECT's are in :mod:`.dm_direct`, which
imports no torch either.
"""

from __future__ import annotations

from unlearnflow.dmm import dm_direct
from unlearnflow.methods.declarations import FINE_TUNING

#: Oracle Matching: Adam, lr decayed 0.95 per epoch, 5x forget and 20x retain (the authors' code).
ORACLE_MATCHING_DEFAULTS = {**FINE_TUNING, "optimizer": "adam", "lr": 5e-4, "epochs": 8, "batch_size": 256,
                            "decay": 0.95, "forget_multiplier": 5, "retain_multiplier": 20.0}
#: The ranges the DMM authors used (lr 1e-4 to 5e-4, 4 to 13 epochs, batch 256 to 512).
ORACLE_MATCHING_GRID = {"lr": [1e-4, 2e-4, 5e-4], "epochs": [4, 6, 8, 10, 13], "batch_size": [256, 512]}

#: DMM: Oracle Matching's fine-tuning with DM-DIRECT's target construction.
DMM_DEFAULTS = {**ORACLE_MATCHING_DEFAULTS, **dm_direct.DEFAULTS}
#: The authors' oracle-matching ranges for the fine-tuning, both target constructions.
DMM_GRID = {"lr": ORACLE_MATCHING_GRID["lr"], "epochs": ORACLE_MATCHING_GRID["epochs"],
            "construction": list(dm_direct.CONSTRUCTIONS)}
