"""Train the challenger: the two-tower model, its ranking stage, and the SavedModel serving calls.

The glue between the run's snapshot of the warehouse and ``ml/``: which settings are
tried on validation, what is saved where, and the record (``training.json``) every later
stage and every reader of the release goes by. The published release id is decided here:
the run's id plus a digest of everything that made the model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime

import numpy as np

from ml.names import CHALLENGER
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import PROJECT_ROOT, MySQLSettings
from recsys_pipeline.training import candidates, scoring, snapshot

CANDIDATE_LIST_LENGTH = 100  # items kept per shopper from the candidate ranking (the tables take their top_k)


def train(
    settings: MySQLSettings,
    run: RunContext,
    config_overrides: dict,
    data_version: str,
    load_id: str | None = None,
    repeat_policy: str | int | None = None,
    top_k: int = 100,
    candidate_ranking: bool = True,
) -> dict:
    """Fit the two-tower model on the train split; save its embeddings, ranking stage and SavedModel; fix the
    dataset's repeat policy and, where the gate has a time cut, fit the candidate ranking the tables publish.

    ``load_id`` (with ``data_version``) is the load this run was asked to train on: the
    snapshot fails if the warehouse holds another one. ``repeat_policy``: the DAG's parameter
    (``ml.repeat_policy.resolve``); ``top_k``: how many items the published lists hold;
    ``candidate_ranking``: off publishes the two-tower model's lists (and the gate measures it).
    """
    from ml.data import from_split_frame, repeat_share
    from ml.evaluate import category_ids
    from ml.item_attributes import encode as encode_item_attributes
    from ml.repeat_policy import INCLUDE, resolve
    from ml.reranker import fit_on_validation
    from ml.serving import RecommenderModule, export_saved_model
    from ml.train import tune_on_validation
    from ml.two_tower import TwoTowerConfig, pad_histories
    from ml.user_segments import segment_popularity

    artifacts = run.artifacts
    data = from_split_frame(snapshot.snapshot_split(settings, artifacts, (load_id, data_version) if load_id else None))
    catalogue = snapshot.read_catalogue(artifacts)
    attributes = encode_item_attributes(data.item_ids, catalogue)
    segments = snapshot.read_user_segments(artifacts, data.user_ids)
    config = TwoTowerConfig(**config_overrides)
    # Whether the user tower reads the profile, and the number of epochs, are chosen on the validation
    # split carved from train (never on test); the model is then refitted on all of train.
    model, config, tuned, tuning = tune_on_validation(
        data, config, {"user_profile": (config.user_profile, not config.user_profile)}, attributes, segments
    )
    # The ranking stage learns to re-order the candidates of the model fitted on `fit` against the
    # validation items; it is used only if it beats the retrieval order on validation users it never saw.
    ranker = fit_on_validation(data, tuned, category_ids(data.item_ids, catalogue), attributes.price_band)
    use_ranker = ranker.record["improves"]
    out = artifacts.path(RunArtifacts.MODEL_DIR)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if ranker.mlp is not None:
        ranker.save(artifacts.path(RunArtifacts.RANKER))
    evaluation_user_embeddings = model.use_histories(data.histories).user_embeddings  # inputs: train items
    serving_user_embeddings = model.embed_users(data.full_histories)  # inputs: everything known
    np.savez(
        artifacts.path(RunArtifacts.EMBEDDINGS),
        user_embeddings=evaluation_user_embeddings,
        serving_user_embeddings=serving_user_embeddings,
        item_embeddings=model.item_embeddings,
        item_bias=model.item_bias,
    )
    # the published lists: may they repeat what a shopper has (the share of repeat purchases in the last
    # period decides unless the dataset's setting does), and the candidate ranking that ranks them
    end_data, why = candidates.end_of_data(artifacts)
    share = repeat_share(end_data.repeats, end_data.fit_repeats) if end_data is not None else None
    policy, policy_record = resolve(run.dataset_key, repeat_policy, share)
    ranking_record = {"used": False, "why": why if candidate_ranking else "turned off by the run's parameter"}
    if end_data is not None and candidate_ranking:
        ranking_record = candidates.fit_for_publishing(
            artifacts,
            end_data,
            policy.mode == INCLUDE,
            max(top_k, CANDIDATE_LIST_LENGTH),
            max_epochs=int(config_overrides.get("epochs", 20)),
        ) | {"why": why}
    lists = candidates.read_lists(artifacts) if ranking_record.get("used") else None
    versions = code_version()
    release_id = release_id_with_inputs(
        run.release_id,
        {"requested": config_overrides, "trained": config.to_dict(), "repeat_policy": str(policy)},
        data_version,
        versions,
    )
    model_version = f"{CHALLENGER}-{release_id}"
    module = RecommenderModule(
        data.user_ids,
        data.item_ids,
        serving_user_embeddings,
        model.item_embeddings,
        data.all_interactions,
        segment_popularity(data.all_interactions, segments),
        model_version,
        item_bias=model.item_bias,
        user_tower=model.model.user_tower,
        history_length=config.history_length,
        segment_names=segments.names,
        ranker=ranker.using(scoring.ranking_features(artifacts, data.item_ids, data.all_interactions))
        if use_ranker
        else None,
        histories=pad_histories(data.full_histories, config.history_length),
        repeat_policy=policy,
        repeats=snapshot.with_repeat_history(artifacts, data).all_repeats,
        ranked_lists=candidates.lists_for(lists, data.user_ids, data.item_ids) if lists is not None else None,
    )
    export_saved_model(module, artifacts.path(RunArtifacts.SAVED_MODEL))
    training = {
        "model": CHALLENGER,
        "model_version": model_version,
        "release_id": release_id,
        "config": config.to_dict(),
        "data_version": data_version,
        "code_version": versions,
        "loss_per_epoch": model.loss_history,
        # one loss per Keras round: an epoch, or the part of one a fractional refit trains in a round
        "epochs_per_loss_point": round(model.epochs_per_check, 4),
        # one value per validation check: per epoch, or per part of one on a large shop (epochs_per_check)
        "validation_ndcg@20_per_epoch": tuned.validation_history,
        "epochs_per_check": round(tuned.epochs_per_check, 4),
        "best_check": tuned.best_check,
        "best_epoch": tuned.best_epoch,
        "tuning": tuning,
        "ranking_stage": ranker.record | {"used": use_ranker},
        "repeat_policy": policy_record,
        "candidate_ranking": ranking_record,
        "examples": int(data.train.nnz),
        "examples_per_second": round(model.examples_per_second, 1),
        "users": data.n_users,
        "items": data.n_items,
        "segments": len(segments.names),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    artifacts.write_json(RunArtifacts.TRAINING, training)
    return {k: training[k] for k in ("model_version", "examples", "examples_per_second", "best_epoch")}


def release_id_with_inputs(run_release_id: str, config: dict, data_version: str, versions: dict) -> str:
    """The published release's id: the run's id plus a digest of what made the model.

    The same run with the same data, code and hyper-parameters rewrites the same
    release (idempotent); a run that differs in any of them -- a weaker rerun on the
    same day included -- gets its own prefix and can never overwrite the champion's.
    """
    inputs = json.dumps({"config": config, "data": data_version, "code": versions}, sort_keys=True)
    return f"{run_release_id}-{hashlib.sha256(inputs.encode()).hexdigest()[:10]}"


def code_version() -> dict:
    """The code a model was trained with: git commit (and whether the tree was dirty), library versions."""
    import keras
    import tensorflow as tf

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
