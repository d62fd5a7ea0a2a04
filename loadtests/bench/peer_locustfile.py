"""Locust users of the naive peer (``naive_peer.py``): the shared load test's requests, as JSON over HTTP.

The classes carry the shared workload names, ``RecommendUser``, ``RankUser`` and ``RankContentUser``, because
``run_locust`` accepts the names of ``loadtests/locustfile.py`` only; the benchmark points Locust at this file
instead (``-f``)::

    locust -f loadtests/bench/peer_locustfile.py --headless -u 4 -t 20s --host http://127.0.0.1:8080 RankUser

Every request is one of the shared payload pool's (``hybridrec.loadtests.locustfile.payload_pool``: the same options,
the same seed, so the same real histories and the same N candidate movieIds as the Triton users send; a `rank` body
carries the N real ids only, without the padding the Triton client adds).
The JSON bodies are encoded once per payload before the run, so the load generator spends its time sending, as it
does for Triton. Closed loop, no think time: users = concurrency. A non-200 answer or one of the wrong shape is a
failed request.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import numpy as np
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner

from hybridrec.loadtests import locustfile as shared
from hybridrec.loadtests.bench.naive_peer import rank_body, rank_content_body, recommend_body

_BODIES: dict[str, list[str]] = {}  # workload -> one JSON body per payload of the shared pool


def _body(workload: str, payload: Any) -> str:
    if workload == "rank":
        return rank_body(payload.arrays["history"][0], payload.movie_ids).decode()
    if workload == "rank_content":
        return rank_content_body(payload.arrays).decode()
    return recommend_body(payload.arrays["history"][0], int(payload.arrays["k"][0])).decode()


def peer_requests(environment: Environment, workload: str) -> tuple[list[Any], list[str]]:
    """(payloads, their JSON bodies) of one workload, built once per process."""
    payloads = shared.payload_pool(environment).get(workload)
    if workload not in _BODIES:
        _BODIES[workload] = [_body(workload, p) for p in payloads]
    return payloads, _BODIES[workload]


class PeerUser(FastHttpUser):
    """One keep-alive HTTP connection to the naive peer; every request fires one Locust request event."""

    abstract = True
    wait_time = between(0, 0)  # closed loop, as the Triton users
    workload: ClassVar[str] = ""

    def __init__(self, environment: Environment) -> None:
        timeout = getattr(environment.parsed_options, "request_timeout", None) or shared.DEFAULT_REQUEST_TIMEOUT_S
        self.network_timeout = self.connection_timeout = float(timeout)
        super().__init__(environment)

    @task
    def send(self) -> None:
        """One random prepared payload of this user's workload, reported under the workload's name."""
        payloads, bodies = peer_requests(self.environment, self.workload)
        i = random.randrange(len(payloads))
        with self.client.post(
            f"/{self.workload}",
            data=bodies[i],
            headers={"Content-Type": "application/json"},
            name=self.workload,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {str(resp.text)[:200]}")
                return
            try:
                self.check(resp.json(), payloads[i])
            except Exception as e:  # a wrong answer is a failed request, not a crash
                resp.failure(f"bad answer: {e}")

    def check(self, answer: dict[str, Any], payload: Any) -> None:
        """Raise unless ``answer`` is a good answer to ``payload``."""
        raise NotImplementedError


class RecommendUser(PeerUser):
    """`recommend` on the naive peer: a real user's history and k -> k movies."""

    workload = "recommend"

    def check(self, answer: dict[str, Any], payload: Any) -> None:
        want = payload.expect[1]
        if len(answer["movie_ids"]) != want or not np.all(np.isfinite(np.asarray(answer["scores"], np.float32))):
            raise ValueError(f"{len(answer['movie_ids'])} movies, expected {want}")


class RankUser(PeerUser):
    """`rank` on the naive peer: a real user's history and N catalog movieIds -> N scores."""

    workload = "rank"

    def check(self, answer: dict[str, Any], payload: Any) -> None:
        scores = answer["scores"]
        if len(scores) != len(payload.movie_ids) or any(s is None for s in scores):
            raise ValueError(f"{len(scores)} scores ({scores[:3]}...), expected {len(payload.movie_ids)} finite ones")


class RankContentUser(PeerUser):
    """`rank_content` on the naive peer: a real user's history and N candidates with posters (base64 in JSON)."""

    workload = "rank_content"

    def check(self, answer: dict[str, Any], payload: Any) -> None:
        scores = np.asarray(answer["scores"], dtype=np.float32)
        if scores.shape != payload.expect or not np.all(np.isfinite(scores)):
            raise ValueError(f"scores of shape {scores.shape}, expected {payload.expect}")


@events.init.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    # Payloads and bodies before the run and its -t timer start (the shared file does it for the Triton users only).
    if isinstance(environment.runner, MasterRunner):
        return
    for user in environment.user_classes:
        if issubclass(user, PeerUser):
            peer_requests(environment, user.workload)
