"""``manage.py changeflow push``: through the real worker, with its answer and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.usefixtures("worker")


def changeflow(process_env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "django", "changeflow", *args],
        env={**os.environ, **process_env},
        cwd=str(REPO),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_push_prints_the_answer(process_env, stream_db):
    done = changeflow(process_env, "push", f"{stream_db}.cli", '{"message": "Hello world"}')
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is True and answer["inserted"] == 1
    [key] = answer["generated_keys"]
    update = changeflow(
        process_env, "push", f"{stream_db}.cli", '{"n": 2}', "--op", "update", "--key", key
    )
    assert update.returncode == 0 and json.loads(update.stdout)["replaced"] == 1
    many = changeflow(process_env, "push", f"{stream_db}.cli", "-", stdin='[{"a": 1}, {"a": 2}]')
    assert many.returncode == 0 and json.loads(many.stdout)["inserted"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{db}.cli", "{not json"], "DATA is not valid JSON"),
        (["bad name.cli", "{}"], "is invalid"),
        (["{db}.cli", '"text"'], "push refused: data must be an object"),
    ],
)
def test_bad_pushes_fail_with_a_clear_message(process_env, stream_db, args, message):
    done = changeflow(process_env, "push", *[a.replace("{db}", stream_db) for a in args])
    assert done.returncode != 0
    assert message in done.stderr


def test_a_push_the_worker_refuses_exits_non_zero(process_env, stream_db):
    assert changeflow(process_env, "push", f"{stream_db}.dup", '{"id": 1}').returncode == 0
    done = changeflow(process_env, "push", f"{stream_db}.dup", '{"id": 1}')
    assert done.returncode != 0
    assert "Duplicate primary key" in done.stderr
    assert json.loads(done.stdout)["ok"] is False


def test_a_push_with_an_idempotency_key_is_written_once(process_env, stream_db):
    args = ("push", f"{stream_db}.idem", '{"n": 1}', "--idempotency-key", "cli-1")
    first = changeflow(process_env, *args)
    second = changeflow(process_env, *args, "--retries", "2")
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    answers = [json.loads(first.stdout), json.loads(second.stdout)]
    assert answers[0] == answers[1] and answers[0]["inserted"] == 1
    other = changeflow(
        process_env, "push", f"{stream_db}.idem", '{"n": 2}', "--idempotency-key", "cli-1"
    )
    assert other.returncode != 0 and "was used for a different push" in other.stderr
    too_long = changeflow(
        process_env, "push", f"{stream_db}.idem", "{}", "--idempotency-key", "k" * 129
    )
    assert too_long.returncode != 0 and "at most 128" in too_long.stderr
