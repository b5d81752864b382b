"""Follow the champion pointer: load a promoted (or rolled-back-to) release beside the old one, then swap.

The watcher asks for ``champion.json``'s ETag every few seconds. When it changes, the new
release is downloaded, checked against its manifest and warmed up in this background
thread while requests go on answering from the old one; then one reference is replaced.
A request reads that reference once, so it finishes on the champion it started with.
A release that fails its checks is never swapped in: the old champion keeps answering
and the failure is logged and counted.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from recsys_pipeline import storage
from recsys_pipeline.serving.champion import LoadedChampion, load_champion, pointer_etag
from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)


class ChampionHolder:
    """The champion every request answers from, replaced whole when the pointer moves."""

    def __init__(self, s3_settings: S3Settings, dataset_key: str, cache_dir: Path, poll_seconds: float = 3.0):
        self.s3_settings = s3_settings
        self.dataset_key = dataset_key
        self.cache_dir = Path(cache_dir)
        self.poll_seconds = poll_seconds
        self.current: LoadedChampion = load_champion(s3_settings, dataset_key, self.cache_dir)
        self.swaps = 0
        self.failed_loads = 0
        self.last_error: str | None = None
        self._refused_etag: str | None = None  # a pointer whose release failed its checks: not retried
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
        self._s3 = storage.client(s3_settings)

    def start(self) -> ChampionHolder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check_now(self) -> bool:
        """Compare the pointer's ETag with the served one; load and swap when it moved. True when swapped."""
        etag = pointer_etag(self._s3, self.s3_settings, self.dataset_key)
        if etag is None or etag in (self.current.pointer.etag, self._refused_etag):
            return False
        try:
            candidate = load_champion(self.s3_settings, self.dataset_key, self.cache_dir)
        except Exception as error:
            self.failed_loads += 1
            self.last_error = f"{type(error).__name__}: {error}"
            self._refused_etag = etag
            log.error(
                "new champion of %s not loaded, still serving %s: %s", self.dataset_key, self.current.release_id, error
            )
            return False
        previous, self.current = self.current, candidate  # one reference: atomic for every reader
        self.swaps += 1
        self.last_error = None
        log.info("now serving %s (was %s)", candidate.release_id, previous.release_id)
        if previous.folder != candidate.folder:
            shutil.rmtree(previous.folder, ignore_errors=True)  # its model is in memory; keep the disk bounded
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check_now()
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("could not read the champion pointer of %s: %s", self.dataset_key, error)
