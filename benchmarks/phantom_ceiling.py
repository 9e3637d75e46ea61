"""What the LIDC readers' ratings themselves support on the phantom: classifiers on the ratings, no image.

The phantom renders each nodule from the readers' consensus contour and three appearance ratings (texture
mean, calcification mode, internal-structure mode; ``naslung.data.phantom.render``), never from the
malignancy rating. A classifier given those ratings and the diameter reads the rendered appearance
perfectly, so its score is about the most an image model can reach from appearance; adding the shape ratings
(subtlety, sphericity, margin, lobulation, spiculation), which the contour carries only in part, gives a
looser upper reference. Each fold K is predicted by a model fitted on the other nine (the same folds as
``cv``; no inner selection: both models have fixed settings)::

    python benchmarks/phantom_ceiling.py            # the cached label table (built by `naslung data phantom`)

Prints accuracy and F1 (mean ± sample std %) on the development folds 0, 6-9 and the test folds 1-5. These
are reference figures, not a method: nothing here is chosen on any fold.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

APPEARANCE = ["texture"]
CATEGORIES = ["calcification", "internalStructure"]
SHAPE = ["subtlety", "sphericity", "margin", "lobulation", "spiculation"]
FEATURE_SETS: dict[str, tuple[list[str], list[str]]] = {
    "diameter": (["diameter_mm"], []),
    "diameter + rendered ratings (texture, calcification, structure)":
        (["diameter_mm", *APPEARANCE], CATEGORIES),
    "diameter + every rating but malignancy": (["diameter_mm", *APPEARANCE, *SHAPE], CATEGORIES),
}
GROUPS = {"development 0, 6-9": [0, 6, 7, 8, 9], "test 1-5": [1, 2, 3, 4, 5]}


def _model(kind: str, numeric: list[str], categorical: list[str]):
    parts = [("numeric", StandardScaler(), numeric)]
    if categorical:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore"), categorical))
    clf = (LogisticRegression(max_iter=2000) if kind == "logistic regression"
           else HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200, random_state=0))
    return make_pipeline(ColumnTransformer(parts), clf)


def fold_scores(table: pd.DataFrame, kind: str, numeric: list[str],
                categorical: list[str]) -> dict[int, tuple[float, float]]:
    """``fold -> (accuracy, F1)`` with each fold predicted by a model fitted on the other nine."""
    scores = {}
    for fold in range(10):
        train, test = table[table.subset != fold], table[table.subset == fold]
        pred = _model(kind, numeric, categorical).fit(train, train.label).predict(test)
        scores[fold] = (accuracy_score(test.label, pred), f1_score(test.label, pred))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", default=None, help="a label table CSV (default: the cached full table)")
    args = parser.parse_args()
    from naslung.data.labels import full_label_table, read_label_table

    table = read_label_table(args.labels) if args.labels else full_label_table()
    table = table.assign(calcification=table.calcification.round().astype(int),
                         internalStructure=table.internalStructure.round().astype(int))
    print(f"{len(table)} nodules, {int(table.label.sum())} malignant")
    print("| features | classifier | folds | accuracy | F1 |\n|---|---|---|---:|---:|")
    warnings.filterwarnings("ignore", category=UserWarning)
    for name, (numeric, categorical) in FEATURE_SETS.items():
        for kind in ("logistic regression", "gradient boosting"):
            scores = fold_scores(table, kind, numeric, categorical)
            for group, folds in GROUPS.items():
                values = 100 * np.array([scores[f] for f in folds])
                mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
                cells = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(mean, std, strict=True))
                print(f"| {name} | {kind} | {group} | {cells} |")


if __name__ == "__main__":
    main()
