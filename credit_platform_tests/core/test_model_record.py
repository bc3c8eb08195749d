"""The desired-model record and the replicas' reports, on SQLite and on MariaDB."""

import time

import pytest

from api.model_sync import write_json
from api.replica_sync import readiness_problem
from credit_platform.core import model_record
from credit_platform.core.db import init_schema
from credit_platform.core.model_record import (
    ReplicasBehind,
    ReplicaState,
    heartbeat,
    publish_challenger,
    publish_model,
    publish_model_if_absent,
    read_desired,
    replicas,
    wait_for_replicas,
)


def state(replica_id: str, model_tag: str, poll_seconds: float = 1.0, **extra) -> ReplicaState:
    return ReplicaState(
        replica_id=replica_id,
        hostname="host",
        bento_tag="credit_score_service:abc",
        model_tag=model_tag,
        challenger=extra.get("challenger"),
        desired_tag=extra.get("desired_tag"),
        problem=extra.get("problem"),
        poll_seconds=poll_seconds,
        stale_seconds=60.0,
    )


def test_the_record_keeps_the_first_model_until_a_reload_and_the_challenger_apart(store_url):
    engine = init_schema(store_url)
    try:
        assert read_desired(engine) is None
        publish_model_if_absent(engine, "credit_score_classifier:a", "replica-1")
        publish_model_if_absent(engine, "credit_score_classifier:b", "replica-2")
        assert read_desired(engine).model_tag == "credit_score_classifier:a"

        shadow = {"tag": "credit_score_classifier:c", "role": "shadow", "share": 0.0}
        # A replica behind on the champion attaches a challenger: the champion stays.
        publish_challenger(engine, shadow, "credit_score_classifier:old", "replica-2")
        record = read_desired(engine)
        assert (record.model_tag, record.challenger) == ("credit_score_classifier:a", shadow)

        publish_model(engine, "credit_score_classifier:b", "replica-3")
        record = read_desired(engine)
        assert (record.model_tag, record.challenger) == ("credit_score_classifier:b", shadow)
        assert record.updated_by == "replica-3"
        publish_challenger(engine, None, "credit_score_classifier:b", "replica-3")
        assert read_desired(engine).challenger is None
    finally:
        engine.dispose()


def test_heartbeats_tell_live_replicas_and_the_wait_names_those_behind(store_url):
    engine = init_schema(store_url)
    try:
        heartbeat(engine, state("r1", "credit_score_classifier:a", poll_seconds=0.2))
        heartbeat(engine, state("r2", "credit_score_classifier:b", problem="no model b"))
        first_start = {r.state.replica_id: r.started_at for r in replicas(engine)}
        time.sleep(1.2)  # r1 (0.2 s polls) is silent past five intervals; r2 (1 s) is not
        heartbeat(engine, state("r2", "credit_score_classifier:b", problem="no model b"))
        reports = {r.state.replica_id: r for r in replicas(engine)}
        assert not reports["r1"].live and reports["r2"].live
        assert reports["r2"].started_at == first_start["r2"]  # a heartbeat keeps the start
        assert reports["r2"].heartbeat_age_seconds < 1.0

        # r1 is silent: only live replicas are waited for.
        assert len(wait_for_replicas(engine, "credit_score_classifier:b", 1.0)) == 2
        with pytest.raises(ReplicasBehind, match=r"r2 serves credit_score_classifier:b \(no mod"):
            wait_for_replicas(engine, "credit_score_classifier:c", 0.5)

        model_record.forget_replica(engine, "r2")
        model_record.forget_silent_replicas(engine, older_than_seconds=1.0)
        assert replicas(engine) == []
    finally:
        engine.dispose()


def test_readiness_holds_within_the_bound_and_says_why_past_it(tmp_path):
    now = 1000.0
    assert readiness_problem(tmp_path, 10.0, now) is None  # not polled yet

    def follower_wrote(**fields) -> None:
        state = {"desired": "m:b", "serving": "m:a", "behind_since": None, "problem": None}
        write_json(tmp_path / "replica.json", {**state, **fields})

    follower_wrote(checked_at=now - 9, problem="cannot read the desired-model record: down")
    assert readiness_problem(tmp_path, 10.0, now) is None  # a blip within the bound
    follower_wrote(checked_at=now - 11, problem="cannot read the desired-model record: down")
    assert "not been read for 11s (bound 10s): cannot read" in readiness_problem(
        tmp_path, 10.0, now
    )
    follower_wrote(checked_at=now, behind_since=now - 9, problem="cannot serve m:b: no model")
    assert readiness_problem(tmp_path, 10.0, now) is None
    follower_wrote(checked_at=now, behind_since=now - 12, problem="cannot serve m:b: no model")
    problem = readiness_problem(tmp_path, 10.0, now)
    assert "names m:b, and for 12s (bound 10s)" in problem and "no model" in problem
