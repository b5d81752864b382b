"""One reading of a run's records, for everything that shows a run to a person.

A run's outcome is spread over ``training.json``, ``metrics.json``, ``decision.json`` and
the gates' results. The CLI summary, the model card, the HTML report and the models page
all show it; reading it in one place means they name the same models, pick the same best
baseline and describe the same choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ml.names import BACKTEST_VIEWS, CHALLENGER, NDCG_20, PRIMARY_METRIC, RERANKED, RETRIEVAL_ORDER
from recsys_pipeline.run import RunArtifacts

USER_TOWER_ENCODERS = {"pooling": "pooled with learned position weights", "gru": "read in time order by a GRU"}


@dataclass(frozen=True)
class BacktestView:
    """One view of the global time-cut backtest (new items only, or repeat purchases counted)."""

    name: str
    label: str
    evaluated_users: int | None
    models: dict[str, dict[str, float]]


@dataclass
class RunSummary:
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    decision: dict | None = None
    quality_raw: dict | None = None
    quality_features: dict | None = None

    @classmethod
    def from_artifacts(cls, artifacts: RunArtifacts) -> RunSummary:
        """What a run folder holds so far (a run that stopped early has fewer records)."""
        return cls.from_reader(artifacts.read_json_if_exists)

    @classmethod
    def from_reader(cls, read: Callable[[str], dict | None]) -> RunSummary:
        """From any reader of a run's records by name (a run folder, or a release in the bucket)."""
        return cls(
            training=read(RunArtifacts.TRAINING) or {},
            metrics=read(RunArtifacts.METRICS) or {},
            decision=read(RunArtifacts.DECISION),
            quality_raw=read(RunArtifacts.QUALITY_RAW),
            quality_features=read(RunArtifacts.QUALITY_FEATURES),
        )

    # --- the models and the decision ---------------------------------------------------

    @property
    def primary_metric(self) -> str:
        return self.metrics.get("primary_metric", PRIMARY_METRIC)

    @property
    def challenger(self) -> str:
        return self.training.get("model", CHALLENGER)

    @property
    def models(self) -> dict[str, dict[str, float]]:
        return self.metrics.get("models", {})

    @property
    def protocol(self) -> str:
        return self.metrics.get("protocol", "")

    @property
    def data_window(self) -> dict[str, dict]:
        return self.metrics.get("data_window", {})

    @property
    def config(self) -> dict:
        return self.training.get("config", {})

    @property
    def promoted(self) -> bool | None:
        return None if self.decision is None else bool(self.decision.get("promote"))

    @property
    def reasons(self) -> list[str]:
        return list((self.decision or {}).get("reasons", []))

    @property
    def repeat_policy(self) -> dict | None:
        """How the run treats what a shopper already has, and why (``ml.repeat_policy.resolve``'s record; the
        gate's copy adds the variant it decided on). None for a run that predates the setting."""
        return (self.decision or {}).get("repeat_policy") or self.training.get("repeat_policy")

    def repeat_policy_line(self) -> str:
        """One sentence: what the published lists do with a shopper's own items, and why."""
        from ml.repeat_policy import from_record

        record = self.repeat_policy
        if not record:
            return "exclude: lists never show an item the shopper already has (the run predates the setting)"
        line = f"{from_record(record).describe()}. Why: {record.get('reason', '?')}"
        if record.get("gate_variant") or record.get("gate_view"):
            line += f". The gate decides on {record.get('gate_variant') or record.get('gate_view')}"
        return line + "."

    @property
    def verdict(self) -> str:
        if self.decision is None:
            return "no decision yet"
        return "PROMOTED" if self.promoted else "NOT PROMOTED: the champion stays"

    def best_baseline(self, metric: str | None = None) -> tuple[str, float] | None:
        """The best model other than the challenger on ``metric`` (the primary metric by default)."""
        metric = metric or self.primary_metric
        scores = {m: v[metric] for m, v in self.models.items() if m != self.challenger and v.get(metric) is not None}
        return max(scores.items(), key=lambda kv: kv[1]) if scores else None

    def ranked_models(self, metric: str | None = None) -> list[tuple[str, dict[str, float]]]:
        """Every model, best first on ``metric``."""
        metric = metric or self.primary_metric
        return sorted(self.models.items(), key=lambda kv: -(kv[1].get(metric) or 0))

    # --- the ranking stage and the backtest --------------------------------------------

    @property
    def ranking_stage(self) -> dict:
        """The ranking stage's record: the training decision, with both orders on test once evaluated."""
        return self.metrics.get("ranking_stage") or self.training.get("ranking_stage", {})

    def ranking_stage_orders(self) -> dict[str, dict[str, float]]:
        orders = self.ranking_stage.get("test", {})
        return {name: orders[name] for name in (RETRIEVAL_ORDER, RERANKED) if name in orders}

    def backtest_views(self) -> list[BacktestView]:
        backtest = self.metrics.get("backtest") or {}
        views = []
        for name, label in BACKTEST_VIEWS.items():
            result = backtest.get("variants", {}).get(name)
            if result:
                views.append(BacktestView(name, label, result.get("evaluated_users"), result.get("models", {})))
        return views

    @property
    def backtest_window(self) -> dict:
        return (self.metrics.get("backtest") or {}).get("window", {})

    def backtest_scores(self, metric: str = NDCG_20) -> dict[str, dict[str, float]]:
        """view -> model -> ``metric`` of the backtest (empty when the run had none)."""
        return {
            view.name: {model: values.get(metric) for model, values in view.models.items()}
            for view in self.backtest_views()
        }

    # --- sentences ----------------------------------------------------------------------

    def two_tower_choices(self) -> str:
        """One sentence on what the run chose for the two-tower model on validation."""
        return two_tower_choices(self.training.get("tuning", {}))

    def ranking_stage_line(self) -> str:
        stage = self.training.get("ranking_stage", {})
        if not stage:
            return "none"
        if stage.get("skipped"):
            return f"not trained ({stage['skipped']})"
        held = stage.get("held_out_ndcg@20", {})
        return (
            f"{'used' if stage.get('used') else 'not used'} -- an MLP re-ordering the {stage.get('candidates')} "
            f"best candidates; held-out validation NDCG@20 {held.get(RETRIEVAL_ORDER)} in retrieval order, "
            f"{held.get(RERANKED)} re-ordered"
        )

    def model_description(self) -> str:
        """The challenger's architecture in one sentence (the model card's "Model" line)."""
        config = self.config
        encoder = USER_TOWER_ENCODERS.get(config.get("sequence_encoder", "pooling"), "?")
        profile = (
            ", and a profile of them (activity, price level, categories) with the segment"
            if config.get("user_profile")
            else ""
        )
        item = " with category, price band and title words" if config.get("item_attributes") else ""
        two_tower = (
            f"two-tower retrieval (user tower: the user's recent items, {encoder}{profile}; "
            f"item tower: item id{item}), in-batch softmax with log-frequency correction"
            f"{_prior_phrase(config.get('popularity_prior', 0.0))}"
        )
        ranking = self.training.get("candidate_ranking") or {}
        if not ranking.get("used"):
            return two_tower
        ranker = ranking.get("ranker", {})
        held_out = ranker.get("held_out_ndcg@20", {})
        return (
            f"published lists: candidates from {', '.join(ranker.get('sources', []))}"
            f"{' (own items too)' if ranker.get('repeats_are_candidates') else ''}, re-ranked by a TensorFlow MLP "
            "(listwise softmax) over the sources' scores and ranks and repeat-buying features, trained on the "
            f"last period before the newest event ({ranking.get('why', '')}; held-out validation NDCG@20 "
            f"{held_out.get('ranker', float('nan')):.4f} against the best source "
            f"{ranker.get('best_source')}'s {held_out.get(ranker.get('best_source'), float('nan')):.4f}); "
            f"real-time answers in context: {two_tower}"
        )

    def metric_rows(
        self, names: Sequence[str], models: dict[str, dict] | None = None, fmt: str = "{:.4f}"
    ) -> list[list[str]]:
        """A table (header first) of ``names`` for each model, in the order given (all models by default)."""
        models = self.models if models is None else models
        rows = [["model", *names]]
        for model, values in models.items():
            rows.append(
                [model, *(fmt.format(values[n]) if isinstance(values.get(n), (int, float)) else "–" for n in names)]
            )
        return rows


def two_tower_choices(tuning: dict) -> str:
    """One sentence on what the run chose for the two-tower model on validation (``training.json`` -> ``tuning``)."""
    if not tuning:
        return ""
    settings = ", ".join(f"{label} {score:.4f}" for label, score in tuning.get("validation_ndcg@20", {}).items())
    text = f"Two-tower setting chosen on validation: {tuning.get('chosen', '?')} (validation ndcg@20: {settings})."
    prior = tuning.get("popularity_prior")
    if prior:
        by_weight = sorted(prior.get("validation_ndcg@20", {}).items(), key=lambda kv: float(kv[0]))
        weights = ", ".join(f"{weight} {score:.4f}" for weight, score in by_weight)
        text += f" Popularity prior weight: {prior.get('chosen')} (validation ndcg@20 by weight: {weights})."
    return text


def _prior_phrase(weight: float) -> str:
    if not weight:
        return ""
    direction = "demoting" if weight < 0 else "favouring"
    return f"; ranked with a popularity prior of weight {weight:g} ({direction} best-sellers, chosen on validation)"
