"""Synthetic shop behaviour in the project's raw data contract, at any size.

Writes a folder that the ``contract_files`` adapter
(``plugins/recsys_pipeline/ingest/adapters.py``) reads as it reads a user's own data:

    events.parquet  source_row_id, user_id, item_id, event_type, quantity, price,
                    event_time (ISO 8601 text in UTC, 'YYYY-MM-DDTHH:MM:SSZ'), basket_id
    items.parquet   item_id, title, category ('|'-separated), price
    users.parquet   user_id, country, attributes (JSON text)
    generator.json  the parameters and the counts (not read by the pipeline)

Parquet, not CSV: the adapter reads Parquet with ``pd.read_parquet`` (typed columns,
Arrow-backed strings), CSV with ``pd.read_csv(dtype="string")``, which is several times
slower at 10M rows, and the benchmark is about the pipeline, not about a CSV parser.

The model (all of it vectorised with numpy, seeded, deterministic for a seed and size):

* ``users ~ events / 50`` and ``items ~ events / 500`` (at most 100,000); user activity and
  item popularity follow power laws (weight of the r-th most active user ~ r^-0.5, of the
  r-th most popular item ~ r^-0.8; ranks are shuffled so ids say nothing about them).
* Sessions: a user, a start time uniform over one year (2023), 1 + Geometric views of
  popularity-drawn items a few seconds to minutes apart; each view becomes a ``cart`` with
  probability 0.30, each cart a ``purchase`` with probability 0.45 (the funnel), all
  purchases of a session share one checkout time and the session id as ``basket_id``
  (an order); 3% of purchases come back as a ``return`` 1-30 days later.
* Items have a category (``department|category``), a title and a log-normal list price;
  purchases carry a quantity (mostly 1) and the unit price (15% of them at a 10% discount).
* A small share of dirty rows, as real logs have: ``--dirty-share`` (default 0.1%) of the
  events are exact double-logged copies or anonymous (no user id); staging puts them in
  ``stg_raw__rejected_events`` (``duplicate_event``, ``missing_user_id``).

Usage: ``.venv/bin/python bench/synthetic_events.py --events 1000000 --out .work/bench/data/x``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GENERATOR_VERSION = 2  # 2: ISO 8601 event times
YEAR_START = np.datetime64("2023-01-01T00:00:00", "s")
YEAR_SECONDS = 365 * 24 * 3600

DEPARTMENTS = {
    "home": ["kitchen", "bath", "garden", "lighting", "furniture", "decor"],
    "fashion": ["shoes", "bags", "women", "men", "kids", "accessories"],
    "electronics": ["phones", "audio", "computers", "cameras", "gaming"],
    "grocery": ["snacks", "drinks", "pantry", "fresh", "frozen"],
    "beauty": ["skincare", "makeup", "fragrance", "hair"],
    "sports": ["outdoor", "fitness", "cycling", "water"],
    "toys": ["games", "puzzles", "outdoor toys", "baby"],
    "books": ["fiction", "non-fiction", "children", "comics"],
}
ADJECTIVES = [
    "classic",
    "modern",
    "vintage",
    "deluxe",
    "mini",
    "large",
    "eco",
    "smart",
    "soft",
    "bright",
    "premium",
    "basic",
]
NOUNS = ["set", "pack", "kit", "edition", "bundle", "model", "collection", "item", "series", "box"]
COUNTRIES = [
    "United Kingdom",
    "Germany",
    "France",
    "Spain",
    "Netherlands",
    "Italy",
    "Poland",
    "Sweden",
    "Ireland",
    "Belgium",
]
COUNTRY_WEIGHTS = np.array([0.40, 0.14, 0.12, 0.08, 0.07, 0.06, 0.05, 0.03, 0.03, 0.02])
SEGMENTS = ["new", "regular", "loyal", "vip"]


@dataclass(frozen=True)
class Params:
    events: int
    seed: int = 42
    users: int = 0  # 0: events / 50
    items: int = 0  # 0: min(events / 500, 100_000)
    user_alpha: float = 0.5  # user activity ~ rank^-alpha
    item_alpha: float = 0.8  # item popularity ~ rank^-alpha
    mean_extra_views: float = 2.5  # views per session = 1 + Geometric with this mean
    p_cart: float = 0.30  # view -> cart
    p_purchase: float = 0.45  # cart -> purchase
    p_return: float = 0.03  # purchase -> return
    dirty_share: float = 0.001  # duplicated or anonymous events

    def resolved(self) -> Params:
        users = self.users or max(10, self.events // 50)
        items = self.items or max(10, min(self.events // 500, 100_000))
        return Params(**{**asdict(self), "users": users, "items": items})


def _power_law_weights(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities ~ rank^-alpha, assigned to ids in a random order."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    weights /= weights.sum()
    return weights[rng.permutation(n)]


def _draw(cdf: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices drawn from the distribution with cumulative sums ``cdf``."""
    index = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(index, len(cdf) - 1).astype(np.int64)


def _ids(prefix: str, n: int) -> pa.Array:
    return pa.array(np.char.add(prefix, np.arange(1, n + 1).astype("U")))


def _time_text(seconds: np.ndarray) -> pa.Array:
    """ISO 8601 UTC text ('YYYY-MM-DDTHH:MM:SSZ', what most shops export) for seconds since
    YEAR_START (dictionaries of days and of seconds of the day, joined by Arrow: ~20x faster
    than pyarrow's strftime)."""
    day, second = np.divmod(seconds, 86400)
    n_days = int(day.max()) + 1
    days = pa.array(np.datetime_as_string(YEAR_START.astype("datetime64[D]") + np.arange(n_days), unit="D"))
    clock = [f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60)]
    return pc.binary_join_element_wise(pc.take(days, pa.array(day)), pc.take(pa.array(clock), pa.array(second)), "T")


def _items(p: Params, rng: np.random.Generator) -> pa.Table:
    categories = [f"{dep}|{cat}" for dep, cats in DEPARTMENTS.items() for cat in cats]
    # category sizes are skewed too
    category = _draw(np.cumsum(_power_law_weights(len(categories), 0.7, rng)), p.items, rng)
    adjective = rng.integers(0, len(ADJECTIVES), p.items)
    noun = rng.integers(0, len(NOUNS), p.items)
    leaf = np.array([c.split("|")[1] for c in categories])
    item_ids = _ids("p", p.items)
    titles = pc.binary_join_element_wise(
        pa.array(np.array(ADJECTIVES)[adjective]),
        pa.array(leaf[category]),
        pa.array(np.array(NOUNS)[noun]),
        pc.cast(pa.array(np.arange(1, p.items + 1)), pa.string()),
        " ",
    )
    price = np.round(np.exp(rng.normal(3.0, 0.9, p.items)), 2).clip(0.5, 5000)
    return pa.table(
        {
            "item_id": item_ids,
            "title": titles,
            "category": pa.array(np.array(categories)[category]),
            "price": pa.array(price),
        }
    )


def _users(p: Params, rng: np.random.Generator) -> pa.Table:
    country = _draw(np.cumsum(COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum()), p.users, rng)
    segment = rng.integers(0, len(SEGMENTS), p.users)
    signup = rng.integers(2015, 2024, p.users)
    attributes = pc.binary_join_element_wise(
        pa.array(np.char.add('{"segment": "', np.array(SEGMENTS)[segment])),
        pa.array(np.char.add('", "signup_year": ', signup.astype("U"))),
        "}",
        "",
    )
    return pa.table(
        {"user_id": _ids("u", p.users), "country": pa.array(np.array(COUNTRIES)[country]), "attributes": attributes}
    )


def _events(p: Params, item_price: np.ndarray, rng: np.random.Generator) -> tuple[pa.Table, dict]:
    n_dirty = int(round(p.events * p.dirty_share))
    n_clean = p.events - n_dirty
    per_view = 1 + p.p_cart + p.p_cart * p.p_purchase * (1 + p.p_return)
    sessions = int(np.ceil(n_clean / ((1 + p.mean_extra_views) * per_view) * 1.05)) + 16

    session_user = _draw(np.cumsum(_power_law_weights(p.users, p.user_alpha, rng)), sessions, rng)
    session_start = rng.integers(0, YEAR_SECONDS - 3600, sessions)
    # views per session: 1 + Geometric(mean mean_extra_views), capped
    views_per_session = np.minimum(1 + rng.geometric(1 / (1 + p.mean_extra_views), sessions) - 1, 40)
    # sessions are in random time order, so keeping the first k sessions is unbiased in time
    n_views = int(views_per_session.sum())
    view_session = np.repeat(np.arange(sessions), views_per_session)
    item_cdf = np.cumsum(_power_law_weights(p.items, p.item_alpha, rng))
    view_item = _draw(item_cdf, n_views, rng)
    gaps = rng.integers(5, 180, n_views)  # seconds between page views
    first = np.repeat(np.cumsum(views_per_session) - views_per_session, views_per_session)
    cum = np.cumsum(gaps)
    view_offset = cum - cum[first] + gaps[first]  # cumulative gaps inside each session
    view_time = session_start[view_session] + view_offset
    session_end = np.zeros(sessions, dtype=np.int64)
    np.maximum.at(session_end, view_session, view_time)

    carted = rng.random(n_views) < p.p_cart
    cart_view = np.flatnonzero(carted)
    cart_time = view_time[cart_view] + rng.integers(5, 60, cart_view.size)
    bought = rng.random(cart_view.size) < p.p_purchase
    buy_view = cart_view[bought]
    buy_session = view_session[buy_view]
    checkout = session_end + 60 + rng.integers(0, 300, sessions)
    buy_time = checkout[buy_session]
    quantity = np.minimum(rng.geometric(0.7, buy_view.size), 12).astype(np.float64)
    discounted = rng.random(buy_view.size) < 0.15
    buy_price = np.round(item_price[view_item[buy_view]] * np.where(discounted, 0.9, 1.0), 2)
    returned = np.flatnonzero(rng.random(buy_view.size) < p.p_return)
    return_time = (
        buy_time[returned] + rng.integers(1, 31, returned.size) * 86400 + rng.integers(0, 86400, returned.size)
    )

    kinds = np.array(["view", "cart", "purchase", "return"])
    session = np.concatenate([view_session, view_session[cart_view], buy_session, buy_session[returned]])
    item = np.concatenate([view_item, view_item[cart_view], view_item[buy_view], view_item[buy_view][returned]])
    kind = np.concatenate(
        [
            np.zeros(n_views, np.int8),
            np.ones(cart_view.size, np.int8),
            np.full(buy_view.size, 2, np.int8),
            np.full(returned.size, 3, np.int8),
        ]
    )
    when = np.concatenate([view_time, cart_time, buy_time, return_time])
    qty = np.concatenate([np.full(n_views, np.nan), np.ones(cart_view.size), quantity, quantity[returned]])
    price = np.concatenate([np.full(n_views, np.nan), item_price[view_item[cart_view]], buy_price, buy_price[returned]])
    if session.size < n_clean:
        raise RuntimeError(f"generated {session.size} events, fewer than {n_clean}; raise the session margin")
    # Keep whole sessions in session order (random in time) and cut the last one to hit
    # n_clean exactly; its views come first, as in a real session cut short.
    per_session = np.bincount(session, minlength=sessions)
    cut = int(np.searchsorted(np.cumsum(per_session), n_clean, side="left"))
    in_cut = np.flatnonzero(session == cut)[: n_clean - int(per_session[:cut].sum())]
    keep = np.flatnonzero(session < cut)
    keep = np.sort(np.concatenate([keep, in_cut]))
    session, item, kind, when, qty, price = (a[keep] for a in (session, item, kind, when, qty, price))
    user = session_user[session].astype(np.int64)

    # dirty rows: exact double-logged copies and anonymous events (user NULL)
    n_dupes = n_dirty // 2
    n_anon = n_dirty - n_dupes
    dupes = rng.integers(0, n_clean, n_dupes)
    anon = rng.integers(0, n_clean, n_anon)
    session = np.concatenate([session, session[dupes], session[anon]])
    item = np.concatenate([item, item[dupes], item[anon]])
    kind = np.concatenate([kind, kind[dupes], kind[anon]])
    when = np.concatenate([when, when[dupes], when[anon] + 1])
    qty = np.concatenate([qty, qty[dupes], qty[anon]])
    price = np.concatenate([price, price[dupes], price[anon]])
    user = np.concatenate([user, user[dupes], np.full(n_anon, -1)])

    # the file is in time order, as a shop's log is; source_row_id is the row number
    order = np.argsort(when, kind="stable")
    session, item, kind, when, qty, price, user = (a[order] for a in (session, item, kind, when, qty, price, user))

    # Arrow builds the strings (no Python object per row)
    user_dictionary = _ids("u", p.users)
    item_dictionary = _ids("p", p.items)
    basket_dictionary = _ids("s", cut + 1)
    user_mask = user < 0
    user_col = pc.take(user_dictionary, pa.array(np.where(user_mask, 0, user), mask=user_mask))
    table = pa.table(
        {
            "source_row_id": pa.array(np.arange(1, p.events + 1, dtype=np.int64)),
            "user_id": user_col,
            "item_id": pc.take(item_dictionary, pa.array(item)),
            "event_type": pc.take(pa.array(kinds), pa.array(kind)),
            "quantity": pa.array(qty, from_pandas=True),
            "price": pa.array(price, from_pandas=True),
            "event_time": _time_text(when),
            "basket_id": pc.take(basket_dictionary, pa.array(session)),
        }
    )
    counts = {
        "events": int(table.num_rows),
        "sessions": int(np.count_nonzero(np.bincount(session))),
        "by_type": {str(kinds[k]): int((kind == k).sum()) for k in range(len(kinds))},
        "duplicated_rows": int(n_dupes),
        "anonymous_rows": int(n_anon),
        "active_users": int(np.count_nonzero(np.bincount(user[~user_mask], minlength=p.users))),
        "active_items": int(np.count_nonzero(np.bincount(item, minlength=p.items))),
    }
    return table, counts


def generate(params: Params, out: Path) -> dict:
    """Write events/items/users Parquet files for ``params`` into ``out``; return the manifest."""
    p = params.resolved()
    started = time.perf_counter()
    rng = np.random.default_rng(p.seed)
    items = _items(p, rng)
    users = _users(p, rng)
    events, counts = _events(p, items.column("price").to_numpy(), rng)
    generated = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("events", events), ("items", items), ("users", users)):
        pq.write_table(table, out / f"{name}.parquet", compression="snappy")
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "params": asdict(p),
        "counts": counts | {"items": items.num_rows, "users": users.num_rows},
        "seconds": {"generate": round(generated, 3), "write": round(time.perf_counter() - started - generated, 3)},
        "bytes": {f.name: f.stat().st_size for f in sorted(out.glob("*.parquet"))},
    }
    (out / "generator.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def ensure_dataset(params: Params, out: Path, regenerate: bool = False) -> dict:
    """The dataset for ``params`` in ``out``: reused when a complete one with the same parameters is there."""
    p = params.resolved()
    manifest_path = out / "generator.json"
    if not regenerate and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        files_ok = all((out / f"{n}.parquet").exists() for n in ("events", "items", "users"))
        if files_ok and manifest.get("params") == asdict(p) and manifest.get("generator_version") == GENERATOR_VERSION:
            return manifest | {"reused": True}
    for stale in ("events", "items", "users"):
        (out / f"{stale}.parquet").unlink(missing_ok=True)
    manifest_path.unlink(missing_ok=True)
    return generate(p, out) | {"reused": False}


def next_day(source: Path, out: Path, share: float, seed: int = 0) -> dict:
    """``source``'s files with one more day of events appended: a shop's daily export, grown.

    The new day is a seeded sample of whole sessions (``basket_id``: a shopper's views, carts,
    order and its returns) holding ``share`` of the existing events, so a day reaches the few
    shoppers who visit that day, as a shop's day does, not a sprinkle of events over everyone;
    users, items, event types and the dirty rows keep their mix. The sample is moved to the day
    after the last event at its own time of day, numbered after the last ``source_row_id``, its
    baskets renamed (``d<n>-``) so no order of the new day merges with an old one. The old rows are unchanged:
    the loader keeps their ``loaded_at``, and the build after it is incremental
    (``features.dbt.plan_build``). Items and users are copied as they are.
    """
    events = pq.read_table(source / "events.parquet")
    rng = np.random.default_rng(seed)
    sessions = pc.dictionary_encode(events.column("basket_id")).combine_chunks()
    session_sizes = np.bincount(sessions.indices.to_numpy(zero_copy_only=False), minlength=len(sessions.dictionary))
    order = rng.permutation(len(session_sizes))
    wanted = max(1, int(round(events.num_rows * share)))
    chosen = np.zeros(len(session_sizes), bool)
    chosen[order[: int(np.searchsorted(np.cumsum(session_sizes[order]), wanted)) + 1]] = True
    picked = np.flatnonzero(chosen[sessions.indices.to_numpy(zero_copy_only=False)])
    n_new = len(picked)
    day = events.take(pa.array(picked))
    when = pc.strptime(day.column("event_time"), format="%Y-%m-%dT%H:%M:%SZ", unit="s").cast(pa.int64()).to_numpy()
    last = int(
        pc.max(pc.strptime(events.column("event_time"), format="%Y-%m-%dT%H:%M:%SZ", unit="s")).cast(pa.int64()).as_py()
    )
    next_midnight = (last // 86400 + 1) * 86400
    moved = next_midnight + when % 86400
    order = np.argsort(moved, kind="stable")
    day = day.take(pa.array(order))
    first_id = int(pc.max(events.column("source_row_id")).as_py()) + 1
    tag = f"d{next_midnight // 86400}-"
    day = (
        day.set_column(0, "source_row_id", pa.array(np.arange(first_id, first_id + n_new, dtype=np.int64)))
        .set_column(
            day.schema.get_field_index("event_time"),
            "event_time",
            _time_text(moved[order] - YEAR_START.astype(np.int64)),
        )
        .set_column(
            day.schema.get_field_index("basket_id"),
            "basket_id",
            pc.binary_join_element_wise(pa.scalar(tag), day.column("basket_id"), ""),
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables([events, day.cast(events.schema)]), out / "events.parquet", compression="snappy")
    for name in ("items", "users"):
        shutil.copyfile(source / f"{name}.parquet", out / f"{name}.parquet")
    manifest = {"grown_from": str(source), "share": share, "seed": seed, "new_events": n_new, "first_new_row": first_id}
    (out / "generator.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, required=True, help="number of event rows (e.g. 1000000)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write events/items/users.parquet into")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--users", type=int, default=0, help="default: events / 50")
    parser.add_argument("--items", type=int, default=0, help="default: min(events / 500, 100000)")
    parser.add_argument("--dirty-share", type=float, default=0.001, help="share of duplicated / anonymous rows")
    args = parser.parse_args(argv)
    params = Params(
        events=args.events, seed=args.seed, users=args.users, items=args.items, dirty_share=args.dirty_share
    )
    manifest = generate(params, args.out)
    json.dump(manifest, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
