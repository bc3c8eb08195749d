"""The feature declaration (`core.features.FEATURES`) is the one place a feature is named.

The declaration itself is checked in-process: records that cannot work are refused, and
every declared feature's example is a value the API takes. Then a feature is added the way
README "Adding a feature" says, in a scratch copy of the code (its `core/features.py`
gains two records), and a fresh interpreter on that copy shows every derived place follows:
the data contract, the store's tables, the generated SQL and the migration `db revision`
writes (migrating a store to it leaves the schema's layout), the API's request model and
its JSON schema, the smoke row, the synthetic generator, the Kaggle loader, the reasons,
the load-test bodies and the training fixture. Last, a model saved before the feature was
added keeps loading and answers exactly as before, through the API's predictor and
through the batch and check path (`prepare_model_input` with the model's own columns).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.predictor import SMOKE_ROW, load_predictor
from api.schemas import PredictionFeatures
from bench.sample_requests import load_sample
from credit_platform.core.data_contract import PLAUSIBLE_RANGES
from credit_platform.core.features import (
    FEATURES,
    HAND_WRITTEN,
    MODEL_FEATURES,
    ChoiceDraw,
    Feature,
    Filler,
    NormalDraw,
)
from credit_platform.core.model_input import prepare_model_input, trained_columns
from credit_platform.core.monitoring import profile_document, reference_profile
from credit_platform_tests.model_fixtures import save_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
# What a scratch copy needs to import and regenerate everything derived.
COPIED = ("credit_platform", "api", "bench", "credit_platform_tests", "sql")
# Where the records are added in the copy: the line closing the FEATURES tuple.
DECLARATION_END = ")  # fmt: skip\n\nFEATURES_BY_NAME"
# Two features of the kinds a declaration draws itself: a whole number and a category.
ADDED_FEATURES = """\
    Feature(
        "num_savings_accounts", "integer", "Number of savings accounts", 2,
        NormalDraw(mean=2.0, sd=1.5, low=0, high=9, risk=-0.5, daily_sd=0.2),
        unit="count", plausible=(0, 30),
    ),
    Feature(
        "housing", "category", "Housing", "Rent", ChoiceDraw((0.5, 0.3, 0.2)),
        values=("Rent", "Mortgage", "Owned"),
    ),
"""
ADDED = ("num_savings_accounts", "housing")


def test_every_example_is_a_plausible_value_the_api_takes():
    assert tuple(SMOKE_ROW) == MODEL_FEATURES
    PredictionFeatures.model_validate({"customer_id": "CUS_1", **SMOKE_ROW})
    for feature in FEATURES:
        if feature.numeric:
            low, high = PLAUSIBLE_RANGES[feature.name]
            assert low <= feature.example <= high, feature.name
            typical_low, typical_high = feature.typical_range
            assert low <= typical_low <= typical_high <= high, feature.name


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kind": "number"}, "kind must be one of"),
        ({"plausible": None}, "plausible"),
        ({"plausible": (5, 1)}, "plausible"),
        ({"values": ("a",)}, "takes no values"),
        ({"synthetic": ChoiceDraw()}, "NormalDraw"),
        ({"synthetic": NormalDraw(0, 1, low=-5, high=5)}, "inside the plausible range"),
        ({"name": "Savings"}, "lower-case"),
        ({"example": 11}, "example must be a plausible value"),
        ({"example": "1"}, "example must be a number"),
        ({"filler": Filler("-1 means unknown", equal=5)}, "outside the plausible range"),
    ],
)
def test_a_number_declared_wrongly_is_refused_naming_it(arguments, message):
    declared: dict[str, Any] = {
        "name": "savings",
        "kind": "integer",
        "title": "Savings",
        "example": 1,
        "synthetic": HAND_WRITTEN,
        "plausible": (0, 10),
        **arguments,
    }
    with pytest.raises(ValueError, match=message) as refused:
        Feature(**declared)
    assert repr(declared["name"]) in str(refused.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"values": ()}, "closed set of values"),
        ({"plausible": (0, 1)}, "only numbers"),
        ({"synthetic": NormalDraw(0, 1, low=0, high=1)}, "ChoiceDraw"),
        ({"synthetic": ChoiceDraw((1.0,))}, "one share per value"),
        ({"listing": True}, "only a text feature"),
        ({"values": ("x" * 65, "Rent")}, "longer than 64"),
        ({"example": "Tent"}, "example must be one of the values"),
    ],
)
def test_a_category_declared_wrongly_is_refused(arguments, message):
    declared: dict[str, Any] = {
        "name": "housing",
        "kind": "category",
        "title": "Housing",
        "example": "Rent",
        "synthetic": ChoiceDraw(),
        "values": ("Rent", "Owned"),
        **arguments,
    }
    with pytest.raises(ValueError, match=message):
        Feature(**declared)


@pytest.fixture(scope="module")
def scratch_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The code copied aside, with two features added to its declaration."""
    root = tmp_path_factory.mktemp("scratch_copy")
    for name in COPIED:
        shutil.copytree(
            REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "results")
        )
    declaration = root / "credit_platform" / "core" / "features.py"
    text = declaration.read_text()
    assert text.count(DECLARATION_END) == 1, "the FEATURES tuple no longer ends as expected"
    declaration.write_text(text.replace(DECLARATION_END, ADDED_FEATURES + DECLARATION_END))
    return root


def run_in_copy(root: Path, script: str, *arguments: str) -> None:
    """Run `script` in a fresh interpreter importing the copy's packages, not these."""
    environment = {**os.environ, "PYTHONPATH": str(root)}
    prelude = f"""
        import credit_platform, api
        assert credit_platform.__file__.startswith({str(root)!r}), credit_platform.__file__
        assert api.__file__.startswith({str(root)!r}), api.__file__
    """
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(script), *arguments],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


DERIVED_PLACES = """
    import random, sys
    from datetime import date
    from pathlib import Path

    import numpy as np
    from pydantic import ValidationError
    from sqlalchemy import Integer, String

    added = ("num_savings_accounts", "housing")
    from credit_platform.core import features
    assert features.MODEL_FEATURES[-2:] == added
    assert "num_savings_accounts" in features.INTEGER_FEATURES
    assert "num_savings_accounts" in features.NUMERIC_FEATURES
    assert "housing" in features.CATEGORICAL_FEATURES

    # the data contract
    from credit_platform.core import data_contract
    assert data_contract.PLAUSIBLE_RANGES["num_savings_accounts"] == (0, 30)
    assert data_contract.CATEGORY_VALUES["housing"] == ("Rent", "Mortgage", "Owned")
    assert "0..30 are treated as missing" in data_contract.allowed_values("num_savings_accounts")
    numbers = np.array([[3.0, 31.0]]).T
    assert data_contract.make_implausible_missing(["num_savings_accounts"], numbers).tolist() == [
        [False], [True]
    ]

    # the store's tables and the SQL generated from them (now stale until regenerated)
    from credit_platform.core.schema import credit_score_features, credit_score_features_target
    for table in (credit_score_features, credit_score_features_target):
        assert isinstance(table.c.num_savings_accounts.type, Integer), table.name
        assert isinstance(table.c.housing.type, String), table.name
    from credit_platform.cli.main import generated_sql_files
    for path, text in generated_sql_files().items():
        assert all(name in text for name in added), path.name
        assert text != path.read_text(), f"{path.name} would not change"

    # the migration `db revision` writes adds the columns in their place
    from click.testing import CliRunner
    from sqlalchemy import inspect
    from credit_platform.cli.main import main
    from credit_platform.core import migrations
    from credit_platform.core.db import init_schema
    from credit_platform_tests.legacy_stores import schema_differences
    written = CliRunner().invoke(main, ["db", "revision", "-m", "features: savings, housing"])
    assert written.exit_code == 0, written.output
    (migration,) = Path("credit_platform/core/migrations/versions").glob("*_features_*.py")
    assert migration.read_text().count("op.add_column_after(") == 4
    engine = init_schema(f"sqlite:///{Path(sys.argv[2]) / 'store.db'}")
    with engine.connect() as connection:
        assert migrations.current_revision(connection) == migration.stem
        assert schema_differences(connection) == []
    columns = [column["name"] for column in inspect(engine).get_columns("credit_score_features")]
    assert columns[-4:] == [*added, "name", "ssn"], columns
    engine.dispose()

    # the API: request model, its JSON schema, the smoke row, the validation messages
    from api.predictor import SMOKE_ROW
    from api.schemas import BatchPredictRequest, PredictionFeatures, PredictRequest
    assert list(PredictionFeatures.model_fields)[-2:] == list(added)
    assert SMOKE_ROW["num_savings_accounts"] == 2 and SMOKE_ROW["housing"] == "Rent"
    schema = PredictRequest.model_json_schema()["$defs"]["PredictionFeatures"]
    assert set(added) <= set(schema["required"])
    assert schema["properties"]["num_savings_accounts"]["x-plausible-maximum"] == 30
    body = {"customer_id": "CUS_1", **SMOKE_ROW}
    assert PredictionFeatures.model_validate(body).features()["housing"] == "Rent"
    for wrong, field in (({"housing": "Tent"}, "housing"), ({"num_savings_accounts": 1.5}, None)):
        try:
            PredictionFeatures.model_validate({**body, **wrong})
        except ValidationError as error:
            (problem,) = error.errors()
            assert problem["loc"] == (next(iter(wrong)),), problem
            assert "must be" in problem["msg"], problem
        else:
            raise AssertionError(f"{wrong} was accepted")
    missing = {key: value for key, value in body.items() if key != "housing"}
    try:
        PredictionFeatures.model_validate(missing)
    except ValidationError as error:
        assert error.errors()[0]["loc"] == ("housing",)
    else:
        raise AssertionError("a body without the added feature was accepted")
    BatchPredictRequest.model_validate({"data": [body]})

    # the synthetic generator draws them as declared
    from credit_platform.ingest.synthetic import generate_synthetic
    stored = generate_synthetic(120, 3, date(2025, 3, 1), seed=5).credit_score_features
    savings = stored["num_savings_accounts"].dropna().astype(float)
    assert len(savings) > 250 and savings.between(0, 9).all() and (savings % 1 == 0).all()
    assert savings.nunique() > 3
    housing = stored["housing"].dropna()
    assert set(housing) == {"Rent", "Mortgage", "Owned"}, set(housing)

    # the Kaggle loader takes a file without them (they load as missing)
    from credit_platform.ingest import kaggle
    assert not set(added) & set(kaggle.REQUIRED_COLUMNS)
    assert set(added) <= set(kaggle.OPTIONAL_COLUMNS)
    import pandas as pd
    raw = pd.read_csv(sys.argv[1], nrows=40, dtype=str)
    loaded = kaggle.clean_kaggle_frame(raw, 2025)[0].credit_score_features
    assert loaded["housing"].isna().all() and loaded["num_savings_accounts"].isna().all()
    raw["Num_Savings_Accounts"], raw["housing"] = "3", "Owned"
    loaded = kaggle.clean_kaggle_frame(raw, 2025)[0].credit_score_features
    assert set(loaded["housing"]) == {"Owned"}
    assert (loaded["num_savings_accounts"] == 3).all()
    from bench.sample_requests import load_sample
    sample = load_sample(Path(sys.argv[1]), rows=50)
    assert sample["housing"].isna().all()

    # reasons read the added features from their titles
    from credit_platform.core.reasons import REASON_CODES, describe
    assert set(added) <= set(REASON_CODES)
    assert describe("num_savings_accounts", 3.0) == "Number of savings accounts: 3"
    assert describe("housing", None) == "Housing not given"

    # a drift reference of a model trained now covers them
    from credit_platform.core.monitoring import profile_document, reference_profile
    from credit_platform_tests.training_fixtures import synthetic_partition
    partition = synthetic_partition(date(2025, 3, 1), rows=200)
    assert set(added) <= set(partition.columns)
    assert partition.columns[-1] == "credit_score"
    document = profile_document(reference_profile(partition))
    assert set(added) <= set(document["features"])

    # load tests send them, and what they send passes the API
    from bench.applicants import random_applicant
    rng = random.Random(3)
    for _ in range(200):
        applicant = random_applicant(rng)
        assert set(added) <= set(applicant)
        PredictionFeatures.model_validate(applicant)
"""


@pytest.mark.slow
def test_an_added_feature_reaches_every_derived_place(
    scratch_copy: Path, kaggle_sample: Path, tmp_path: Path
):
    run_in_copy(scratch_copy, DERIVED_PLACES, str(kaggle_sample), str(tmp_path))


OLD_MODEL_SCORES = """
    import json, sys
    import numpy as np
    import pandas as pd

    from api.predictor import SMOKE_ROW, load_predictor
    from credit_platform.core.features import MODEL_FEATURES
    from credit_platform.core.model_input import prepare_model_input, trained_columns
    from credit_platform.core.monitoring import profile_from_document

    saved = json.loads(open(sys.argv[1]).read())
    assert MODEL_FEATURES[-2:] == ("num_savings_accounts", "housing")
    assert SMOKE_ROW["housing"] == "Rent"
    # load_predictor runs the smoke test on the new smoke row, with the added features
    predictor = load_predictor(saved["tag"])
    rows = [{**row, "num_savings_accounts": 4, "housing": "Owned"} for row in saved["rows"]]
    probabilities = predictor.probabilities(rows)
    assert np.array_equal(probabilities, np.array(saved["served"])), "the answers moved"
    answers = predictor.predict(rows)
    assert [answer.label for answer in answers] == saved["labels"]
    explained = predictor.explain(rows[:3], answers[:3])
    assert all(answer.explanation for answer in explained)

    # the batch-scoring and check path: the model's own columns from a frame holding more
    model = predictor.bundle.model
    assert "housing" not in trained_columns(model)
    frame = pd.DataFrame(rows)
    prepared = prepare_model_input(frame, predictor.bundle.scalers, columns=trained_columns(model))
    assert list(prepared.columns) == list(trained_columns(model))
    batch = np.asarray(model.predict_proba(prepared), dtype="float64")
    assert np.allclose(batch, np.array(saved["batch"]), rtol=0, atol=1e-12)

    # its drift reference (stored before the features existed) still reads
    for document in saved["references"]:
        profile = profile_from_document(document)
        assert "age" in profile.counts and "housing" not in profile.counts
"""


@pytest.mark.slow
def test_a_model_saved_before_a_feature_was_added_keeps_serving_the_same_answers(
    scratch_copy: Path, kaggle_sample: Path, tmp_path: Path
):
    sample = load_sample(kaggle_sample, rows=600)
    tag = save_tiny_model(sample, iterations=10)
    predictor = load_predictor(tag)
    rows = [
        {name: None if value != value else value for name, value in record.items()}
        for record in sample[list(MODEL_FEATURES)].iloc[:40].to_dict(orient="records")
    ]
    model = predictor.bundle.model
    prepared = prepare_model_input(
        sample.iloc[:40], predictor.bundle.scalers, columns=trained_columns(model)
    )
    reference = profile_document(reference_profile(sample))
    earlier_form = {key: value for key, value in reference.items() if key != "features"}
    saved = {
        "tag": tag,
        "rows": rows,
        "served": predictor.probabilities(rows).tolist(),
        "labels": [answer.label for answer in predictor.predict(rows)],
        "batch": np.asarray(model.predict_proba(prepared), dtype="float64").tolist(),
        "references": [reference, earlier_form],
    }
    handed_over = tmp_path / "saved.json"
    handed_over.write_text(json.dumps(saved, default=float))
    run_in_copy(scratch_copy, OLD_MODEL_SCORES, str(handed_over))
