"""Write a copy of a built-in dataset as a user's own files, damaged one way or written as a real shop exports it.

    .venv/bin/python scripts/write_bad_load.py --dataset groceries --out .work/bad-load/groceries
    .venv/bin/python scripts/write_bad_load.py --dataset groceries --kind semicolon --out .work/bad-load/x

The folder's name becomes the dataset key; a folder named like a built-in dataset gets its own
key (``groceries-folder``), so it never shares that dataset's champion. The folder must be
inside ``RECSYS_DATA_DIR`` or a folder listed in ``RECSYS_DATASET_DIRS`` to be loaded.

``--kind`` (default ``teleport``): ``teleport`` gives ``--rows`` events an event type the
pipeline has never seen (``--event-type``), as a tracking change upstream would produce;
the others are the formats of ``SHOP_FORMATS`` (the bad-input corpus of
``tests/integration/test_bad_inputs.py``): each is either loaded exactly or refused with
a message naming the file, the column and the rule.
"""

from __future__ import annotations

import argparse
import decimal
import gzip
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# what a real shop sends: kind -> (loaded or refused, what it is)
SHOP_FORMATS = {
    "bom": ("loaded", "UTF-8 with a byte-order mark"),
    "crlf": ("loaded", "CRLF line endings"),
    "quoted": ("loaded", "quoted fields holding commas, quotes and line breaks (titles, basket ids)"),
    "unicode-ids": ("loaded", "ids in any script: accents, decomposed accents, case, CJK, emoji"),
    "typed-parquet": ("loaded", "Parquet with integer user ids, timestamp times and decimal prices"),
    "semicolon": ("loaded", "';'-separated CSV declared by the folder's contract.json"),
    "gzip": ("loaded", "gzip-compressed CSV (events.csv.gz)"),
    "semicolon-undeclared": ("refused", "';'-separated CSV without a declaration"),
    "long-ids": ("refused", "an item id longer than the contract's 64 characters"),
    "ragged-row": ("refused", "a row with more fields than the header (an unquoted comma)"),
    "duplicate-rows-ids": ("refused", "a source_row_id repeated far apart in the file (different batches)"),
    "gzip-bomb": ("refused", "a small gzip file that expands past RECSYS_MAX_INPUT_DECOMPRESSED_BYTES"),
}
# ids that one case-, accent- or normalisation-insensitive collation would merge: all must stay apart
CONFUSABLE_IDS = ["café", "cafe\u0301", "CAFÉ", "cafe", "Café"]
SCRIPT_IDS = ["商品-42", "ユーザー", "🛒🍎", "Ωmega", "naïve-Ü", "👩‍👩‍👧"]


def teleport(events: pd.DataFrame, rows: int, event_type: str) -> pd.DataFrame:
    events = events.copy()
    events.loc[events.index[:rows], "event_type"] = event_type
    return events


def unicode_ids(events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame):
    """The first items and users renamed to ids in many scripts, confusables included (same rows)."""
    new_items = CONFUSABLE_IDS + SCRIPT_IDS
    item_map = dict(zip(items["item_id"].head(len(new_items)), new_items, strict=True))
    user_map = dict(zip(users["user_id"].head(len(SCRIPT_IDS)), [f"u-{i}" for i in SCRIPT_IDS], strict=True))
    events = events.assign(item_id=events["item_id"].replace(item_map), user_id=events["user_id"].replace(user_map))
    return (
        events,
        items.assign(item_id=items["item_id"].replace(item_map)),
        users.assign(user_id=users["user_id"].replace(user_map)),
    )


def _csv(frame: pd.DataFrame, path: Path, **options) -> None:
    frame.to_csv(path, index=False, **options)


def _typed_parquet(events: pd.DataFrame, path: Path) -> None:
    """Integer user ids (nullable), timestamp times in UTC, decimal prices: as a warehouse export types them."""
    prices = [None if pd.isna(p) else decimal.Decimal(f"{float(p):.4f}") for p in events["price"]]
    table = pa.table(
        {
            "source_row_id": pa.array(events["source_row_id"], pa.int64()),
            "user_id": pa.array(pd.to_numeric(events["user_id"]).astype("Int64"), pa.int64()),
            "item_id": pa.array(events["item_id"], pa.string()),
            "event_type": pa.array(events["event_type"], pa.string()).dictionary_encode(),
            "quantity": pa.array(events["quantity"].astype("int64"), pa.int32()),
            "price": pa.array(prices, pa.decimal128(12, 4)),
            "event_time": pa.array(pd.to_datetime(events["event_at"]).dt.tz_localize("UTC")),
            "basket_id": pa.array(events["basket_id"], pa.string()),
        }
    )
    pq.write_table(table, path)


def write_format(kind: str, events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, out: Path) -> dict:
    """Write contract frames into ``out`` the way ``kind`` says; the frames as written (what a load must keep)."""
    out.mkdir(parents=True, exist_ok=True)
    if kind != "typed-parquet":  # the typed time, written as text by every other kind
        events = events.drop(columns=["event_at"], errors="ignore")
    if kind == "quoted":
        items = items.assign(title=items["title"].astype("string"))
        items.loc[items.index[:3], "title"] = ['Mug "Hello", blue', "two\r\nlines, one item", 'a ""quoted"" title']
        events = events.assign(basket_id=events["basket_id"].astype("string") + ", web")
    elif kind == "unicode-ids":
        events, items, users = unicode_ids(events, items, users)
    elif kind == "long-ids":
        events = events.copy()
        events.loc[events.index[7], "item_id"] = "x" * 65
    elif kind == "duplicate-rows-ids":
        events = events.copy()
        events.loc[events.index[-1], "source_row_id"] = events["source_row_id"].iloc[0]
    if kind == "bom":
        _csv(events, out / "events.csv", encoding="utf-8-sig")
    elif kind == "crlf":
        _csv(events, out / "events.csv", lineterminator="\r\n")
    elif kind in ("semicolon", "semicolon-undeclared"):
        _csv(events, out / "events.csv", sep=";")
        if kind == "semicolon":
            (out / "contract.json").write_text(json.dumps({"csv": {"delimiter": ";"}}))
    elif kind == "gzip":
        _csv(events, out / "events.csv.gz", compression="gzip")
    elif kind == "gzip-bomb":
        first = events.head(1).drop(columns=["source_row_id"])  # rows are numbered: 200,000 valid copies
        with gzip.open(out / "events.csv.gz", "wt") as handle:
            handle.write(first.to_csv(index=False) + first.to_csv(index=False, header=False) * 200_000)
    elif kind == "typed-parquet":
        _typed_parquet(events, out / "events.parquet")
    else:
        _csv(events, out / "events.csv")
        if kind == "ragged-row":
            with (out / "events.csv").open("a") as handle:
                handle.write(events.tail(1).to_csv(index=False, header=False).rstrip("\n") + ",gift wrap\n")
    sep = ";" if kind.startswith("semicolon") else ","  # the contract's delimiter is every CSV file's
    _csv(items, out / "items.csv", sep=sep)
    _csv(users, out / "users.csv", sep=sep)
    return {"kind": kind, "expected": SHOP_FORMATS[kind][0], "events": events, "items": items, "users": users}


def main() -> int:
    from recsys_pipeline.ingest.adapters import read_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="groceries")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kind", default="teleport", choices=["teleport", *SHOP_FORMATS])
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--event-type", default="teleport")
    args = parser.parse_args()
    raw = read_dataset(args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.kind == "teleport":
        events = teleport(raw.events, args.rows, args.event_type)
        events.to_csv(args.out / "events.csv", index=False)
        raw.items.to_csv(args.out / "items.csv", index=False)
        raw.users.to_csv(args.out / "users.csv", index=False)
        print(
            f"wrote {args.out}: {len(events):,} events ({args.rows} of them '{args.event_type}'), "
            f"{len(raw.items):,} items, {len(raw.users):,} users"
        )
        return 0
    written = write_format(args.kind, raw.events, raw.items, raw.users, args.out)
    print(f"wrote {args.out}: {SHOP_FORMATS[args.kind][1]} ({written['expected']} by the pipeline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
