"""Write a copy of a built-in dataset with one kind of damage, as a user's own files (for the README's demo).

    .venv/bin/python scripts/write_bad_load.py --dataset groceries --out .work/bad-load/groceries

The folder's name becomes the dataset key, so ``--out .../groceries`` is compared with the
last good ``groceries`` load and guarded by its champion. The damage: ``--rows`` events get an
event type the pipeline has never seen (``--event-type``, default ``teleport``), as a tracking
change upstream would produce.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys_pipeline.ingest.adapters import read_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="groceries")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--event-type", default="teleport")
    args = parser.parse_args()
    raw = read_dataset(args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    events = raw.events.copy()
    events.loc[events.index[: args.rows], "event_type"] = args.event_type
    events.to_csv(args.out / "events.csv", index=False)
    raw.items.to_csv(args.out / "items.csv", index=False)
    raw.users.to_csv(args.out / "users.csv", index=False)
    print(
        f"wrote {args.out}: {len(events):,} events ({args.rows} of them '{args.event_type}'), "
        f"{len(raw.items):,} items, {len(raw.users):,} users"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
