"""Early stopping inside long epochs: past ``examples_per_check`` examples an epoch is cut into rounds,
each ending with a validation check; the best point, a fraction of an epoch, is what the refit trains."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.unit


def _config(**changes):
    from ml.two_tower import TwoTowerConfig

    base = TwoTowerConfig(
        embedding_dim=8, history_length=8, epochs=2, batch_size=64, item_attributes=False, user_profile=False
    )
    return dataclasses.replace(base, **changes)


def test_rounds_are_whole_epochs_up_to_the_bound_and_parts_of_epochs_past_it():
    from ml.train import epochs_of, training_rounds

    big = _config(batch_size=1024, epochs=20)
    assert training_rounds(100, big, validating=True) == (20, 100)  # 102,400 examples: checked once an epoch
    # 1,000 steps of 1,024 = 1,024,000 examples, past 1,000,000: two checks an epoch, 500 steps apart
    assert training_rounds(1000, big, validating=True) == (40, 500)
    assert training_rounds(1000, dataclasses.replace(big, examples_per_check=0), validating=True) == (20, 1000)
    assert training_rounds(6400, big, validating=True) == (140, 915)  # 6.6M examples: 7 checks an epoch
    assert epochs_of(3, 500, 1000) == 1.5 and epochs_of(3, 1000, 1000) == 3
    # without validation: the epochs given, a fraction spread over rounds no longer than an epoch
    assert training_rounds(1000, dataclasses.replace(big, epochs=3), validating=False) == (3, 1000)
    assert training_rounds(1000, dataclasses.replace(big, epochs=1.5), validating=False) == (2, 750)
    assert training_rounds(1000, dataclasses.replace(big, epochs=0.333), validating=False) == (1, 333)


def test_a_repeated_stream_of_passes_holds_every_index_once_per_pass_each_in_a_new_order():
    from ml.two_tower import shuffled_batches

    batches = [b.numpy().tolist() for b in shuffled_batches(23, 5, seed=4).repeat().take(15)]
    passes = [sum(batches[i : i + 5], []) for i in (0, 5, 10)]
    assert all(sorted(p) == list(range(23)) for p in passes)
    assert len({tuple(p) for p in passes}) == 3


def _split(n_users: int = 150, items_each: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for user in range(n_users):
        group = 0 if user % 2 else 15
        items = (rng.permutation(15)[:items_each] + group).tolist()
        for rank, item in enumerate(items):
            rows.append(
                {
                    "user_id": f"u{user:03d}",
                    "item_id": f"i{item:02d}",
                    "split": "test" if rank == items_each - 1 else "train",
                    "is_validation": int(rank == items_each - 2),
                    "item_rank": rank + 1,
                }
            )
    return pd.DataFrame(rows)


def _steps_run(recommender) -> int:
    return int(recommender.model.optimizer.iterations.numpy())


@pytest.mark.parametrize("causal_history", [True, False])
def test_checks_inside_epochs_then_a_refit_of_the_best_fraction(causal_history):
    from ml.data import from_split_frame
    from ml.train import TwoTowerRecommender, training_rounds

    data = from_split_frame(_split())
    # 150 shoppers x 6 fit items = 900 examples: 15 steps of 64 (960 examples) an epoch; a check every
    # ~300 examples is 4 checks an epoch, 4 steps apart (the last round runs into the next epoch)
    config = _config(examples_per_check=300, patience=100, causal_history=causal_history)
    tuned = TwoTowerRecommender(config).fit(data.fit, data.fit_histories, validation=data.validation)
    assert tuned.epochs_per_check == pytest.approx(4 / 15)
    assert len(tuned.validation_history) == len(tuned.loss_history) == 8  # ceil(2 epochs x 15 / 4)
    assert _steps_run(tuned) == 32
    best = int(np.argmax(tuned.validation_history)) + 1
    assert tuned.best_check == best and tuned.best_epoch == round(best * 4 / 15, 3)

    refit_config = dataclasses.replace(config, epochs=tuned.best_epoch)
    refit = TwoTowerRecommender(refit_config).fit(data.train, data.histories)
    steps_per_epoch = -(-sum(len(h) for h in data.histories) // config.batch_size)
    rounds, per_round = training_rounds(steps_per_epoch, refit_config, validating=False)
    assert _steps_run(refit) == rounds * per_round
    assert abs(_steps_run(refit) - tuned.best_epoch * steps_per_epoch) < rounds  # the fraction, to whole steps


def test_whole_epochs_below_the_bound_as_before():
    from ml.data import from_split_frame
    from ml.train import TwoTowerRecommender

    data = from_split_frame(_split())
    tuned = TwoTowerRecommender(_config(patience=100)).fit(data.fit, data.fit_histories, validation=data.validation)
    assert tuned.epochs_per_check == 1.0 and len(tuned.validation_history) == 2
    assert _steps_run(tuned) == 30 and tuned.best_epoch == tuned.best_check in (1, 2)


def test_tuning_refits_the_chosen_fraction_of_an_epoch():
    from ml.data import from_split_frame
    from ml.train import tune_on_validation

    data = from_split_frame(_split())
    model, chosen, tuned, record = tune_on_validation(data, _config(examples_per_check=300), {})
    assert chosen.epochs == tuned.best_epoch
    assert record["epochs_per_check"] == {"default": pytest.approx(4 / 15, abs=1e-4)}
    steps_per_epoch = -(-sum(len(h) for h in data.histories) // 64)
    assert abs(_steps_run(model) - chosen.epochs * steps_per_epoch) < 2


def test_a_check_on_a_sample_of_the_shop_embeds_only_the_sampled_shoppers(monkeypatch):
    from ml.data import from_split_frame
    from ml.train import TwoTowerRecommender, ValidationRanking

    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "40")
    data = from_split_frame(_split())
    tuned = TwoTowerRecommender(_config(epochs=1)).fit(data.fit, data.fit_histories, validation=data.validation)
    check = ValidationRanking(tuned, data.fit_histories, data.fit, data.validation)
    assert len(check.users) == 40  # 40 of the 150 validation shoppers: theirs are the embeddings computed
    full = tuned.embed_users(data.fit_histories)
    tuned.use_histories(data.fit_histories, users=check.users)
    np.testing.assert_allclose(tuned.user_embeddings[check.users], full[check.users], rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(data.n_users), check.users)
    assert not tuned.user_embeddings[others].any()
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "0")  # every validation shopper: most of the shop, all embedded
    assert ValidationRanking(tuned, data.fit_histories, data.fit, data.validation).users is None
