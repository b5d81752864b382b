"""Prometheus metrics of the service: requests, latency, the model served, the feedback log's health.

A registry of its own (not the process-wide default), so two services in one process --
tests, benchmarks -- never mix their counts.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# milliseconds matter here: the targets are p99 <= 10 ms (known shopper) and <= 25 ms (in context)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    def __init__(self, holder, feedback, activity):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recsys_serving_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "recsys_serving_request_seconds",
            "Time to answer, per endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_received = Counter(
            "recsys_serving_events_received", "Events posted by the shop", registry=self.registry
        )
        model = Gauge(
            "recsys_serving_model_info",
            "The champion being served (value 1)",
            ["release_id", "model_version"],
            registry=self.registry,
        )
        written = Gauge(
            "recsys_serving_feedback_rows_written", "Feedback rows written to MySQL", ["table"], registry=self.registry
        )
        for table in feedback.written:
            written.labels(table).set_function(lambda table=table: feedback.written[table])
        Gauge(
            "recsys_serving_feedback_rows_spooled",
            "Feedback rows written to the local spool file while MySQL was unreachable",
            registry=self.registry,
        ).set_function(lambda: feedback.spooled_rows)
        Gauge("recsys_serving_mysql_up", "1 when the feedback log reaches MySQL", registry=self.registry).set_function(
            lambda: float(feedback.mysql_up)
        )
        Gauge("recsys_serving_model_swaps", "Champions swapped in since start", registry=self.registry).set_function(
            lambda: holder.swaps
        )
        Gauge(
            "recsys_serving_failed_loads",
            "New champions that failed their checks and were not swapped in",
            registry=self.registry,
        ).set_function(lambda: holder.failed_loads)
        Gauge(
            "recsys_serving_evicted_shoppers",
            "Shoppers whose recent events were dropped for lack of room (least recently active first)",
            registry=self.registry,
        ).set_function(lambda: activity.evicted)
        Gauge(
            "recsys_serving_active_shoppers", "Shoppers whose recent events are kept", registry=self.registry
        ).set_function(lambda: len(activity))
        self._model = model
        self._holder = holder

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        champion = self._holder.current
        self._model.clear()
        self._model.labels(champion.release_id, champion.model_version).set(1)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
