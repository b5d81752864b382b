"""The HTTP API the shop's backend calls: lists for shoppers, related items, and events back.

Every list carries the model version, a request id and a reason per item, and is logged
with them; every event the shop posts is remembered for the shopper's next answer and
logged for the next training run. Requests never wait for MySQL or object storage:
answers come from the champion in memory, logging goes through a queue.
"""

from __future__ import annotations

import csv
import time
import uuid
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_pipeline.ingest.contract import ID_MAX_LENGTH
from recsys_pipeline.serving import answers
from recsys_pipeline.serving.api_keys import HEADER, ApiKeyCheck
from recsys_pipeline.serving.feedback import FeedbackLog
from recsys_pipeline.serving.hot_swap import ChampionHolder
from recsys_pipeline.serving.metrics import ServingMetrics
from recsys_pipeline.serving.sessions import RecentActivity
from recsys_pipeline.settings import dbt_project_dir

MAX_K = 500
MAX_CONTEXT_ITEMS = 200
MAX_BODY_BYTES = 64 * 1024
MAX_EVENTS_PER_POST = 500


class Surface(StrEnum):
    """Where the list is shown; recorded with it, so online metrics can be read per surface."""

    home = "home"
    product = "product"
    cart = "cart"
    push = "push"


def event_types() -> tuple[str, ...]:
    """The event types the pipeline weighs (dbt's ``event_weights`` seed): what the next run can learn from."""
    with (dbt_project_dir() / "seeds" / "event_weights.csv").open(newline="") as handle:
        return tuple(row["event_type"] for row in csv.DictReader(handle))


EventType = Enum("EventType", {name: name for name in event_types()}, type=str)

Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH)]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items (1-{MAX_K})")]


class ContextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(None, description="the shopper, when known; omit for an anonymous visitor")
    recent_item_ids: list[Id] = Field([], description="items the shopper just looked at, oldest first")
    cart_item_ids: list[Id] = Field([], description="items in the shopper's cart")
    exclude_item_ids: list[Id] = Field([], max_length=MAX_K, description="items never to return")
    segment: Annotated[str, Field(max_length=64)] | None = Field(None, description="e.g. the shopper's country")
    k: int = Field(10, ge=1, le=MAX_K)
    surface: Surface = Surface.home

    @model_validator(mode="after")
    def _context_size(self):
        if len(self.recent_item_ids) + len(self.cart_item_ids) > MAX_CONTEXT_ITEMS:
            raise ValueError(
                f"recent_item_ids and cart_item_ids hold {len(self.recent_item_ids) + len(self.cart_item_ids)} "
                f"items together; at most {MAX_CONTEXT_ITEMS} are allowed"
            )
        return self


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id
    event_type: EventType
    event_time: datetime | None = Field(None, description="when the shopper acted (ISO 8601); default: now")
    quantity: float | None = Field(None, ge=-1e9, le=1e9)
    price: float | None = Field(None, ge=0, le=1e12)
    request_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = Field(
        None, description="the list the shopper came from"
    )
    event_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z_-]{8,32}$")] | None = Field(
        None, description="an idempotency key: the same event posted twice is written once"
    )


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_POST)


class ItemOut(BaseModel):
    item_id: str
    score: float
    reason: str
    because_of: str | None = None


class ListOut(BaseModel):
    request_id: str
    model_version: str
    release_id: str
    user_id: str | None
    surface: Surface
    source: str = Field(description="published, in_context, best_sellers or related")
    known_user: bool
    items: list[ItemOut]
    ignored_item_ids: list[str] = Field([], description="context ids the model does not know (ignored)")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _sql_time(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ", timespec="milliseconds")


def create_app(
    holder: ChampionHolder,
    activity: RecentActivity,
    feedback: FeedbackLog,
    keys: ApiKeyCheck,
    metrics: ServingMetrics | None = None,
) -> FastAPI:
    metrics = metrics or ServingMetrics(holder, feedback, activity)
    app = FastAPI(
        title="recsys-pipeline serving",
        summary="Real-time recommendations from the dataset's champion release",
        version="1",
    )
    dataset = holder.dataset_key

    app.add_middleware(BodyLimitAndMetrics, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"] if part not in ("body", "query", "path"))
            if problem["type"] == "json_invalid":
                return _error(400, "body", f"malformed JSON: {problem.get('ctx', {}).get('error', problem['msg'])}")
            problems.append({"field": field or "body", "rule": problem["msg"]})
        first = problems[0]
        return JSONResponse(
            status_code=422,
            content={"error": f"{first['field']}: {first['rule']}", "field": first["field"], "problems": problems},
        )

    async def require_key(request: Request) -> None:  # async: no thread hop for a dictionary check
        key = request.headers.get(HEADER)
        authorization = request.headers.get("authorization", "")
        if key is None and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not keys.is_valid(key):
            raise HTTPException(
                status_code=401,
                detail=f"a valid API key is required in the {HEADER} header (create one with `recsys api-key create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    authorised = [Depends(require_key)]

    def served(answer: answers.Answer, champion, user_id: str | None, surface: Surface, endpoint: str) -> JSONResponse:
        """Log the list, then answer with it; a response built here skips FastAPI's second validation pass
        (``response_model`` still documents it)."""
        request_id = uuid.uuid4().hex
        now = _sql_time(_now())
        feedback.put(
            "served_lists",
            (request_id, dataset, user_id, champion.model_version, champion.release_id, surface.value, endpoint,
             answer.source, now),
        )  # fmt: skip
        items = []
        for position, item in enumerate(answer.items, start=1):
            feedback.put("served_items", (request_id, position, item.item_id, item.score, item.reason[:255]))
            items.append(
                {"item_id": item.item_id, "score": item.score, "reason": item.reason, "because_of": item.because_of}
            )
        return JSONResponse(
            {
                "request_id": request_id,
                "model_version": champion.model_version,
                "release_id": champion.release_id,
                "user_id": user_id,
                "surface": surface.value,
                "source": answer.source,
                "known_user": answer.known_user,
                "items": items,
                "ignored_item_ids": list(answer.ignored_item_ids),
            }
        )

    @app.get("/healthz", summary="Liveness and the champion being served (no key needed)")
    async def healthz():
        champion = holder.current
        return {
            "status": "ok",
            "dataset": dataset,
            "release_id": champion.release_id,
            "model_version": champion.model_version,
            "mysql_up": feedback.mysql_up,
            "last_error": holder.last_error,
        }

    @app.get(
        "/v1/users/{user_id}/recommendations",
        response_model=ListOut,
        dependencies=authorised,
        summary="A known shopper's list, as published, updated with their events since the release",
    )
    async def user_recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH)],
        k: K = 10,
        surface: Surface = Surface.home,
    ):
        champion = holder.current  # read once: a swap meanwhile does not change this answer
        recent = activity.recent(user_id)
        if recent or k > champion.published_k or user_id not in champion.published:
            # the SavedModel is asked: a few milliseconds of TensorFlow, off the event loop
            answer = await run_in_threadpool(answers.recommend, champion, user_id, k, recent)
        else:  # the published list: a dictionary lookup, answered on the loop
            answer = answers.recommend(champion, user_id, k, recent)
        return served(answer, champion, user_id, surface, "user")

    @app.post(
        "/v1/recommendations",
        response_model=ListOut,
        dependencies=authorised,
        summary="A shopper in context: recent items, cart, segment, items to exclude; newcomers included",
    )
    def context_recommendations(request: ContextRequest):
        champion = holder.current
        recent = activity.recent(request.user_id) if request.user_id else []
        answer = answers.recommend(
            champion,
            request.user_id,
            request.k,
            recent=recent,
            context_item_ids=request.recent_item_ids,
            cart_item_ids=request.cart_item_ids,
            segment=request.segment,
            exclude_item_ids=request.exclude_item_ids,
        )
        return served(answer, champion, request.user_id, request.surface, "context")

    @app.get(
        "/v1/items/{item_id}/related",
        response_model=ListOut,
        dependencies=authorised,
        summary="Items that go with this one: product page and cart complements",
    )
    async def related_items(
        item_id: Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH)],
        k: K = 10,
        surface: Surface = Surface.product,
    ):
        champion = holder.current
        answer = answers.related(champion, item_id, k)
        if answer is None:
            raise HTTPException(status_code=404, detail=f"item {item_id!r} is not in release {champion.release_id}")
        return served(answer, champion, None, surface, "related")

    @app.post(
        "/v1/events",
        status_code=202,
        dependencies=authorised,
        summary="Views, carts and purchases as they happen: the shopper's next answer reads them",
    )
    def post_events(body: EventsIn):
        received = _sql_time(_now())
        ids = []
        for event in body.events:
            event_id = event.event_id or uuid.uuid4().hex
            at = event.event_time or datetime.now(UTC)
            feedback.put(
                "online_events",
                (event_id, dataset, event.user_id, event.item_id, event.event_type.value, event.quantity,
                 event.price, _sql_time(at), event.request_id, received),
            )  # fmt: skip
            activity.record(event.user_id, event.item_id, event.event_type.value, time.time())
            ids.append(event_id)
        metrics.events_received.inc(len(ids))
        return {"accepted": len(ids), "event_ids": ids}

    @app.get("/metrics", dependencies=authorised, response_class=PlainTextResponse, summary="Prometheus metrics")
    def prometheus_metrics():
        body, content_type = metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    return app


class BodyLimitAndMetrics:
    """Refuse bodies over ``MAX_BODY_BYTES`` (declared or streamed) and time every request.

    Plain ASGI rather than ``@app.middleware``: that wrapper costs a task and a queue per
    request, a visible share of a millisecond answer.
    """

    def __init__(self, app, metrics: ServingMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        too_large = f"the request body is larger than {MAX_BODY_BYTES} bytes"

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:  # a chunked body without a length
                    raise HTTPException(status_code=413, detail=f"body: {too_large}")
            return message

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                await _error(413, "body", too_large)(scope, receive, send_and_note)
            else:
                await self.app(scope, receive_within_limit, send_and_note)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", "unmatched"), status, time.perf_counter() - started)


def _error(status: int, field: str, rule: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": f"{field}: {rule}", "field": field})
