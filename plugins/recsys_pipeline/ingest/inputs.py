"""Which dataset a name or a folder means, and whether the pipeline may read it.

The ``dataset`` of a run comes from a form anyone who may trigger a DAG fills in, so it
is not trusted: a folder is accepted only inside ``RECSYS_DATA_DIR`` or a folder listed
in ``RECSYS_DATASET_DIRS``, after resolving it, and no part of it below that root (nor
a file in it) may be a symbolic link, which could point anywhere on the worker.

A dataset's *key* names its load ids, its run folders, its releases and its champion.
A user's folder never gets a built-in dataset's key (a folder named ``groceries`` is
``groceries-folder``), so it never shares that dataset's champion, last good load or
drift baseline; and a key is short enough that ``<key>:<release id>`` stays a unique
load id (``load_audit.load_id`` is ``VARCHAR(64)``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.settings import data_dir, dataset_dirs

BUILTIN_DATASETS = ("online-retail", "groceries")
DATASET_KEY_MAX_LENGTH = 40
FOLDER_KEY_SUFFIX = "-folder"  # what a user's folder named like a built-in dataset is keyed as


def dataset_key(dataset: str) -> str:
    """A key-safe name for a dataset given by name or by folder; never a built-in's for a folder.

    Raises ContractError when the name gives no key or one longer than DATASET_KEY_MAX_LENGTH.
    """
    if dataset in BUILTIN_DATASETS:
        return dataset
    name = Path(dataset).name if "/" in dataset else dataset
    key = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
    if key.lower() in BUILTIN_DATASETS:
        key += FOLDER_KEY_SUFFIX
    if not key:
        raise ContractError(f"dataset {dataset!r}: its name has no letter or digit to key its loads and releases by")
    if len(key) > DATASET_KEY_MAX_LENGTH:
        raise ContractError(
            f"dataset {dataset!r}: its key {key!r} has {len(key)} characters, at most {DATASET_KEY_MAX_LENGTH} "
            "(it starts every load id, VARCHAR(64), and names the releases): give the folder a shorter name"
        )
    return key


def allowed_roots_text() -> str:
    roots = dataset_dirs()
    listed = ", ".join(str(r) for r in roots[1:]) or "not set"
    return f"RECSYS_DATA_DIR ({roots[0]}) or a folder listed in RECSYS_DATASET_DIRS ({listed})"


def refuse_link(path: Path, what: str) -> None:
    """ContractError when ``path`` is a symbolic link (it could point anywhere on the worker)."""
    if path.is_symlink():
        raise ContractError(
            f"{what} {path} is a symbolic link; links are refused (they can point anywhere on the worker): "
            f"copy the data into {allowed_roots_text()}"
        )


def resolve_dataset_folder(dataset: str) -> Path:
    """The folder ``dataset`` names, resolved, once it is inside an allowed root with no link below it.

    A relative name is read inside ``RECSYS_DATA_DIR``. Raises ContractError naming the path and
    the settings otherwise; nothing is read before.
    """
    given = Path(dataset).expanduser()
    if ".." in given.parts:
        raise ContractError(f"dataset folder {dataset!r}: '..' is not allowed in a dataset path")
    candidate = Path(os.path.normpath(given if given.is_absolute() else data_dir() / given))
    for root in dataset_dirs():
        root = Path(os.path.normpath(root.absolute()))
        real_root = root.resolve()
        for base in dict.fromkeys((root, real_root)):
            if candidate == base or not candidate.is_relative_to(base):
                continue
            folder = real_root
            for part in candidate.relative_to(base).parts:
                folder = folder / part
                refuse_link(folder, "dataset folder")
            if not folder.is_dir():
                raise ContractError(
                    f"dataset {dataset!r} is neither a built-in ({', '.join(BUILTIN_DATASETS)}) nor a folder "
                    f"with events.csv/events.parquet: {folder} not found"
                )
            return folder
    raise ContractError(
        f"dataset folder {candidate} is not inside {allowed_roots_text()}: "
        "move it there, or list its parent folder in RECSYS_DATASET_DIRS"
    )
