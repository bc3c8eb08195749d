"""Shadow and canary challengers: what a user relies on when a second model runs beside
the champion. Unit tests of the routing and of the shadow's queue, then a real server
(the built Bento on a free port) with an attached shadow, an attached canary, and refusals.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import bentoml
import pytest
import requests

from api.challengers import (
    MAX_CANARY_SHARE,
    SHADOW_SUFFIX,
    Challenger,
    ChallengerSpec,
    ShadowRow,
    ShadowScorer,
    canary_bucket,
    routes_to_canary,
)
from api.model_sync import SHADOW_STATS_PREFIX, ModelSync
from api.prediction_log import PredictionLogger
from api.predictor import load_predictor
from api.service import shadow_log_row
from credit_platform.core import routes
from credit_platform.core.db import make_engine
from credit_platform.core.model_record import publish_challenger
from credit_platform.core.settings import api_worker_state_dir
from credit_platform_tests.api import test_api_service as served
from credit_platform_tests.api.test_api_service import TOKEN, ModelTags, Server, features_of
from credit_platform_tests.model_fixtures import save_tiny_model

# The real server and its models, as the service tests make them (one server for this module).
sample = served.sample
payloads = served.payloads
tags = served.tags
server = served.server

# --- routing ------------------------------------------------------------------------------


def test_canary_bucket_is_stable_and_spread_evenly() -> None:
    customers = [f"CUS_{number:06x}" for number in range(20_000)]
    buckets = [canary_bucket(customer) for customer in customers]
    assert buckets == [canary_bucket(customer) for customer in customers]  # same every time
    assert all(0.0 <= bucket < 1.0 for bucket in buckets)
    for share in (0.05, 0.2, 0.5):
        chosen = sum(bucket < share for bucket in buckets) / len(buckets)
        assert chosen == pytest.approx(share, abs=0.01)
    # Deciles hold a tenth each: no region of the id space is favoured.
    deciles = Counter(int(bucket * 10) for bucket in buckets)
    assert max(deciles.values()) - min(deciles.values()) < 0.02 * len(buckets)


def test_challenger_spec_refuses_bad_roles_and_shares() -> None:
    with pytest.raises(ValueError, match="role must be shadow or canary"):
        ChallengerSpec("m:1", "champion")
    for share in (-0.01, MAX_CANARY_SHARE + 0.01, 1.0):
        with pytest.raises(ValueError, match="share must be between 0 and 0.5"):
            ChallengerSpec("m:1", "canary", share)
    assert ChallengerSpec("m:1", "shadow", 0.9).answered_share == 0.0  # a shadow answers none
    spec = ChallengerSpec("m:1", "canary", 0.25)
    assert ChallengerSpec.from_dict(json.loads(json.dumps(spec.as_dict()))) == spec
    assert ChallengerSpec.from_dict({"tag": None}) is None


def test_only_a_canary_takes_traffic_and_only_its_share(tags: ModelTags) -> None:
    predictor = load_predictor(tags.second)
    customers = [f"c{number}" for number in range(4000)]
    shadow = Challenger(ChallengerSpec(tags.second, "shadow"), predictor)
    assert not any(routes_to_canary(shadow, customer) for customer in customers)
    assert not any(routes_to_canary(None, customer) for customer in customers)
    canary = Challenger(ChallengerSpec(tags.second, "canary", 0.1), predictor)
    routed = [customer for customer in customers if routes_to_canary(canary, customer)]
    assert len(routed) / len(customers) == pytest.approx(0.1, abs=0.02)


# --- the shadow's queue -----------------------------------------------------------------


class MisbehavingPredictor:
    """A shadow model that sleeps before scoring, or raises."""

    def __init__(self, real: Any, *, sleep: float = 0.0, fail: bool = False) -> None:
        self.real, self.sleep, self.fail = real, sleep, fail
        self.tag, self.role = real.tag, "shadow"

    def predict(self, rows: list[dict]) -> list:
        time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("shadow model exploded")
        return self.real.predict(rows)


def _shadow_rows(payloads: list[dict], prefix: str) -> list[ShadowRow]:
    return [
        ShadowRow(f"{prefix}-{number}", payload["customer_id"], features_of(payload))
        for number, payload in enumerate(payloads)
    ]


def test_a_slow_or_failing_shadow_never_holds_the_caller(
    tags: ModelTags, payloads: list[dict], tmp_path: Path
) -> None:
    real = load_predictor(tags.second)
    log = PredictionLogger(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "spool")
    try:
        for predictor, expect_errors in (
            (MisbehavingPredictor(real, sleep=0.5), False),
            (MisbehavingPredictor(real, fail=True), True),
        ):
            shadow = Challenger(ChallengerSpec(real.tag, "shadow"), predictor)
            scorer = ShadowScorer(lambda shadow=shadow: shadow, log.submit, shadow_log_row)
            prefix = "fail" if expect_errors else "slow"
            started = time.perf_counter()
            for row in _shadow_rows(payloads[:20], prefix):
                scorer.offer([row])
            assert time.perf_counter() - started < 0.05  # queued, never scored in the caller
            scorer.close()
            stats = scorer.stats()
            if expect_errors:
                assert stats["errors"] == 20 and stats["scored"] == 0
                assert "shadow model exploded" in stats["last_error"]
            else:
                assert stats["errors"] == 0
        log.close()
        logged = _logged_ids(f"sqlite:///{tmp_path / 'log.db'}")
        # The slow shadow's rows all reached the log before close returned, once each.
        assert sorted(r for r in logged if r.startswith("slow")) == sorted(
            f"slow-{n}{SHADOW_SUFFIX}" for n in range(20)
        )
        assert not [r for r in logged if r.startswith("fail")]
    finally:
        log.close()


def test_a_full_shadow_backlog_skips_rows_and_counts_them(
    tags: ModelTags, payloads: list[dict], tmp_path: Path
) -> None:
    real = load_predictor(tags.second)
    gate = threading.Event()

    class Gated(MisbehavingPredictor):
        def predict(self, rows: list[dict]) -> list:
            gate.wait(10)
            return self.real.predict(rows)

    shadow = Challenger(ChallengerSpec(real.tag, "shadow"), Gated(real))
    submitted: list = []

    def submit(rows: list) -> Future:
        submitted.extend(rows)
        done: Future = Future()
        done.set_result(None)
        return done

    scorer = ShadowScorer(lambda: shadow, submit, shadow_log_row, max_backlog=10)
    rows = _shadow_rows(payloads[:30], "full")
    scorer.offer(rows[:1])  # taken by the thread, which then waits at the gate
    time.sleep(0.2)
    for row in rows[1:]:
        scorer.offer([row])
    gate.set()
    scorer.close()
    stats = scorer.stats()
    assert stats["skipped"] == 19 and stats["scored"] == 11 and stats["backlog"] == 0
    assert len(submitted) == 11


def test_shadow_counters_are_summed_over_the_workers_of_a_server(
    tags: ModelTags, payloads: list[dict], tmp_path: Path
) -> None:
    """Each worker scores the rows of the requests it answered and publishes its counters;
    /metadata adds the other live workers' to its own (a dead worker's file is ignored)."""
    real = load_predictor(tags.second)
    shadow = Challenger(ChallengerSpec(real.tag, "shadow"), real)
    sync = ModelSync(served=None, state_dir=tmp_path)  # type: ignore[arg-type]

    def submit(rows: list) -> Future:
        done: Future = Future()
        done.set_result(None)
        return done

    scorer = ShadowScorer(lambda: shadow, submit, shadow_log_row, stats_path=sync.shadow_stats_path)
    scorer.offer(_shadow_rows(payloads[:12], "own"))
    scorer.close()
    assert json.loads(sync.shadow_stats_path.read_text())["scored"] == 12

    other = subprocess.Popen(["sleep", "60"])  # a live second worker
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        for pid, scored in ((other.pid, 30), (gone.pid, 1000)):
            (tmp_path / f"worker-{pid}.json").write_text(json.dumps({"tag": real.tag}))
            (tmp_path / f"{SHADOW_STATS_PREFIX}{pid}.json").write_text(
                json.dumps({"scored": scored, "skipped": 2, "errors": 1, "backlog": 0,
                            "last_error": "ValueError: x"})
            )  # fmt: skip
        (tmp_path / f"worker-{os.getpid()}.json").write_text(json.dumps({"tag": real.tag}))
        totals = sync.shadow_totals(scorer.stats())
    finally:
        other.kill()
        other.wait()
    assert totals == {
        "scored": 42,
        "skipped": 2,
        "errors": 1,
        "backlog": 0,
        "last_error": "ValueError: x",
        "workers": 2,
    }
    sync.stop()
    assert not sync.shadow_stats_path.exists()


def _logged_ids(url: str) -> list[str]:
    from sqlalchemy import create_engine, select

    from credit_platform.core.schema import credit_predictions_api_log as log_table

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(log_table.c.request_id)).scalars())
    finally:
        engine.dispose()


# --- a real server ------------------------------------------------------------------------


def _challenger(server: Server, body: dict | None, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is None:
        return requests.delete(
            f"{server.url}{routes.ADMIN_CHALLENGER}", headers=headers, timeout=60
        )
    return requests.post(
        f"{server.url}{routes.ADMIN_CHALLENGER}", json=body, headers=headers, timeout=60
    )


def _metadata_everywhere(server: Server, times: int = 12) -> list[dict]:
    """/metadata from whichever workers answer (a new connection each time)."""
    return [requests.get(f"{server.url}{routes.METADATA}", timeout=10).json() for _ in range(times)]


def _shadow_totals(server: Server) -> dict:
    body = requests.get(f"{server.url}{routes.METADATA}", timeout=10).json()
    return body["challenger"]["shadow"]


def _wait_for(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _customer_payloads(payloads: list[dict], count: int, prefix: str) -> list[dict]:
    """`count` requests of distinct customers (real feature rows, new customer ids)."""
    return [
        {**payloads[number % len(payloads)], "customer_id": f"{prefix}{number:05d}"}
        for number in range(count)
    ]


def test_a_shadow_scores_every_request_and_never_changes_an_answer(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    champion, shadow_model = load_predictor(tags.first), load_predictor(tags.second)
    attached = _challenger(server, {"tag": tags.second, "role": "shadow"})
    assert attached.status_code == 200, attached.text
    try:
        for metadata in _metadata_everywhere(server):
            assert metadata["model_version"] == tags.first
            assert metadata["challenger"]["role"] == "shadow"
            assert metadata["challenger"]["model_version"] == tags.second
            assert metadata["challenger"]["share"] == 0.0
            assert metadata["champion_share"] == 1.0

        scored_before = _shadow_totals(server)["scored"]
        singles = _customer_payloads(payloads, 40, "SHD")
        for number, payload in enumerate(singles):
            response = server.post(
                routes.PREDICT, {"data": payload}, headers={"X-Request-ID": f"shadow-{number}"}
            )
            assert response.status_code == 200, response.text
            expected = champion.predict([features_of(payload)])[0]
            assert response.json()["predict"] == expected.label  # the champion answers
            assert response.json()["confidence"] == pytest.approx(expected.confidence)
        batch = server.post(
            routes.PREDICT_BATCH, {"data": singles[:30]}, headers={"X-Request-ID": "shadow-batch"}
        )
        assert batch.status_code == 200
        # A retry of an answered request adds no second shadow row.
        again = server.post(
            routes.PREDICT, {"data": singles[0]}, headers={"X-Request-ID": "shadow-0"}
        )
        assert again.status_code == 200

        shadow_ids = [f"shadow-{n}{SHADOW_SUFFIX}" for n in range(40)] + [
            f"shadow-batch#{n}{SHADOW_SUFFIX}" for n in range(30)
        ]

        def shadow_rows() -> list[dict]:
            return [r for r in server.log_rows() if r["request_id"].endswith(SHADOW_SUFFIX)]

        _wait_for(lambda: len(shadow_rows()) >= 70, what="the shadow's 70 log rows")
        # Whichever worker answers /metadata counts the rows every worker scored.
        _wait_for(
            lambda: all(_shadow_totals(server)["scored"] == scored_before + 70 for _ in range(6)),
            what="every worker's /metadata counting all 70 shadow rows",
        )
        assert _shadow_totals(server)["workers"] == 2
        rows = {row["request_id"]: row for row in shadow_rows()}
        assert sorted(rows) == sorted(shadow_ids)  # each exactly once
        for number, payload in enumerate(singles):
            row = rows[f"shadow-{number}{SHADOW_SUFFIX}"]
            expected = shadow_model.predict([features_of(payload)])[0]
            assert row["role"] == "shadow" and row["model_version"] == tags.second
            assert row["prediction"] == expected.label
            assert row["confidence"] == pytest.approx(expected.confidence)
        answered = server.log_rows(request_id="shadow-3")
        assert [(r["role"], r["model_version"]) for r in answered] == [("champion", tags.first)]
    finally:
        detached = _challenger(server, None)
    assert detached.status_code == 200 and detached.json()["status"] == "detached"
    assert all(m["challenger"] is None for m in _metadata_everywhere(server))
    server.post(routes.PREDICT, {"data": payloads[0]}, headers={"X-Request-ID": "after-detach"})
    time.sleep(0.5)
    assert not server.log_rows(request_id=f"after-detach{SHADOW_SUFFIX}")


def test_a_canary_answers_its_share_of_customers_sticky_per_customer(
    server: Server, tags: ModelTags, payloads: list[dict]
) -> None:
    attached = _challenger(server, {"tag": tags.second, "role": "canary", "share": 0.2})
    assert attached.status_code == 200, attached.text
    try:
        for metadata in _metadata_everywhere(server):
            assert metadata["challenger"]["role"] == "canary"
            assert metadata["challenger"]["share"] == pytest.approx(0.2)
            assert metadata["champion_share"] == pytest.approx(0.8)

        customers = _customer_payloads(payloads, 10_000, "CAN")
        for start in range(0, len(customers), 50):  # the server's batch limit
            response = server.post(
                routes.PREDICT_BATCH,
                {"data": customers[start : start + 50]},
                headers={"X-Request-ID": f"canary-{start}"},
            )
            assert response.status_code == 200, response.text
        rows = [r for r in server.log_rows() if r["request_id"].startswith("canary-")]
        assert len(rows) == 10_000
        roles = Counter(row["role"] for row in rows)
        assert roles["canary"] / len(rows) == pytest.approx(0.2, abs=0.015)
        assert {row["model_version"] for row in rows if row["role"] == "canary"} == {tags.second}
        assert {row["model_version"] for row in rows if row["role"] == "champion"} == {tags.first}
        by_customer = {row["customer_id"]: row["role"] for row in rows}

        # The same customers again, one at a time: each keeps the model it had.
        canary = load_predictor(tags.second)
        for number, payload in enumerate(customers[:60]):
            response = server.post(
                routes.PREDICT, {"data": payload}, headers={"X-Request-ID": f"sticky-{number}"}
            )
            assert response.status_code == 200
            (row,) = server.log_rows(request_id=f"sticky-{number}")
            assert row["role"] == by_customer[payload["customer_id"]]
            if row["role"] == "canary":
                expected = canary.predict([features_of(payload)])[0]
                assert response.json()["predict"] == expected.label
    finally:
        assert _challenger(server, None).status_code == 200


def test_bad_challenger_requests_are_refused_and_serving_is_unchanged(
    server: Server, tags: ModelTags
) -> None:
    before = server.get(routes.METADATA).json()
    refusals = [
        ({"tag": "credit_score_classifier:nosuch", "role": "shadow"}, TOKEN, 404, "no model"),
        ({"tag": tags.broken, "role": "canary", "share": 0.1}, TOKEN, 422, "scale"),
        ({"tag": tags.second, "role": "canary", "share": 0.7}, TOKEN, 400, "share"),
        ({"tag": tags.second, "role": "champion"}, TOKEN, 400, "role"),
        ({"tag": tags.second, "role": "canary", "share": 0.1, "x": 1}, TOKEN, 400, "x"),
        ({"tag": before["model_version"], "role": "shadow"}, TOKEN, 409, "champion already"),
        ({"tag": tags.second, "role": "shadow"}, None, 401, "Bearer"),
        ({"tag": tags.second, "role": "shadow"}, "wrong-token", 401, "Bearer"),
    ]
    for body, token, status, words in refusals:
        response = _challenger(server, body, token)
        assert response.status_code == status, (body, response.text)
        assert words in response.text, (body, response.text)
        after = server.get(routes.METADATA).json()
        assert after["model_version"] == before["model_version"]
        assert after["challenger"] is None


def test_metadata_says_why_a_shadow_could_not_be_loaded(
    server: Server, tags: ModelTags, sample
) -> None:
    # A shadow every worker and the replicas' record agreed on, then removed from the store,
    # as a new worker (a restart) would find it: the champion serves alone and /metadata
    # says why. The record first: the replica follows the record, so a local state that
    # disagreed with it would be undone within a poll.
    doomed = save_tiny_model(sample, partition="2025-01-20", iterations=5, depth=2, seed=9)
    assert _challenger(server, {"tag": doomed, "role": "shadow"}).status_code == 200
    assert _challenger(server, None).status_code == 200
    bentoml.models.delete(doomed)
    spec = {"tag": doomed, "role": "shadow", "share": 0.0}
    engine = make_engine(server.log_url)
    try:
        publish_challenger(engine, spec, tags.first, by="test")
    finally:
        engine.dispose()
    state_dir = api_worker_state_dir(_server_identity(server))
    (state_dir / "challenger.json").write_text(json.dumps(spec))
    _wait_for(
        lambda: all(m["challenger_problem"] for m in _metadata_everywhere(server, 6)),
        what="every worker to report the shadow it cannot load",
    )
    metadata = server.get(routes.METADATA).json()
    assert metadata["challenger"] is None and doomed in metadata["challenger_problem"]
    assert metadata["model_version"] == tags.first
    assert server.post(routes.PREDICT, {"data": _any_payload(sample)}).status_code == 200
    assert _challenger(server, None).status_code == 200
    assert statistics.mean([m["champion_share"] for m in _metadata_everywhere(server, 4)]) == 1.0


def _any_payload(sample) -> dict:
    from bench.sample_requests import valid_request_payloads

    return valid_request_payloads(sample, 1)[0]


def _server_identity(server: Server) -> str:
    from api.model_sync import process_identity

    # The server process the test started runs `credit-platform serve`, which execs into
    # BentoML's server; the workers' state directory is named after that process.
    return process_identity(server.process.pid)


def test_the_service_client_attaches_and_detaches(server: Server, tags: ModelTags) -> None:
    from credit_platform.core.service_client import ServiceClient, ServiceError

    client = ServiceClient(server.url)
    answer = client.set_challenger(TOKEN, tags.second, "canary", 0.1)
    assert answer["status"] == "attached" and answer["champion_share"] == pytest.approx(0.9)
    reported = client.reported_model()
    assert reported.challenger["model_version"] == tags.second
    assert reported.challenger["role"] == "canary"
    with pytest.raises(ServiceError, match="HTTP 400"):
        client.set_challenger(TOKEN, tags.second, "canary", 0.9)
    with pytest.raises(ServiceError, match="is not set"):
        client.set_challenger(None, tags.second)
    assert client.set_challenger(TOKEN, None)["status"] == "detached"
    assert client.reported_model().challenger is None
