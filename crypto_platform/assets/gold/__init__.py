"""gold layer: causal features, point-in-time labels, training set, model (MLflow) and predictions.

One module per concern: `features` (gold/features, gold/labels), `training` (gold/training_set and
its summary), `model` (gold/model, gold/model_evaluations), `predictions` (gold/predictions); `inputs`
reads silver as gold needs it. The assets are thin: the computations live in `transforms/` and `ml/`.

Silver is read as it is: a minute absent from silver (a day not materialized, a recording that
ended, an import that stopped) is unknown time, and gold never fills it. Feature windows restart
after such a gap and labels are only made where bar t+h exists. Leading empty minutes that silver
could not price (no earlier close when it built them) take the close of the minute before when
that minute is known, else they are dropped (`priced_candles`).

Labels are written for every model horizon (1, 5, 15, 60 minutes); the training set picks one
(`horizon_minutes`), the model records it and predictions forecast that horizon, so the horizon is
configured once. `dg.load_assets_from_modules([gold])` loads every gold asset from this package.
"""

from crypto_platform.assets.gold.features import gold_features, gold_labels
from crypto_platform.assets.gold.model import gold_model
from crypto_platform.assets.gold.predictions import gold_predictions
from crypto_platform.assets.gold.training import gold_training_set

__all__ = ["gold_features", "gold_labels", "gold_model", "gold_predictions", "gold_training_set"]
