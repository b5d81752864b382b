"""Which files of a release the models page hands out, and how.

The page runs inside Airflow's API server, in the Airflow UI's origin, for every logged-in
user. So it serves only what a person reads to judge a model -- the report, the model card,
the metrics, the gate's decision and the Data Docs and dbt docs sites -- by an allow-list
of names, never the model itself (the SavedModel carries every shopper's embedding and
recent items) nor the recommendation tables: those are read with the pipeline's own
credentials, from the bucket or MySQL.

Each file is streamed from object storage in chunks, up to a size cap
(``RECSYS_MODELS_PAGE_MAX_FILE_BYTES``), and every response carries a restrictive
Content-Security-Policy with ``sandbox`` (the document gets an opaque origin: whatever
it runs cannot read Airflow's cookies or call its API as the user) and
``X-Content-Type-Options: nosniff``. Each kind allows only what its pages use:

* the HTML report: its own ``<style>`` and inline SVG charts (matplotlib), nothing fetched;
* Data Docs (Great Expectations): its inline scripts and the CDN scripts, styles and fonts
  its templates load (the index's table is drawn by them); no requests back to any server;
* dbt docs: one self-contained page -- its ``manifest.json`` and ``catalog.json`` are
  inlined where dbt's own ``--static`` build puts them, because a sandboxed page cannot
  fetch them with the user's login;
* JSON and the markdown model card: text, nothing runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from recsys_pipeline.run import RunArtifacts

CHUNK_BYTES = 64 * 1024

_COMMON = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
# what Great Expectations' Data Docs templates load (render/view/templates/*.j2)
_DATA_DOCS_HOSTS = (
    "https://cdn.jsdelivr.net https://unpkg.com https://cdnjs.cloudflare.com "
    "https://code.jquery.com https://stackpath.bootstrapcdn.com https://maxcdn.bootstrapcdn.com"
)
TEXT_CSP = f"sandbox; {_COMMON}"
REPORT_CSP = f"sandbox; {_COMMON}; style-src 'unsafe-inline'; img-src data:"
DATA_DOCS_CSP = (
    f"sandbox allow-scripts; {_COMMON}; script-src 'unsafe-inline' {_DATA_DOCS_HOSTS}; "
    f"style-src 'unsafe-inline' {_DATA_DOCS_HOSTS}; font-src {_DATA_DOCS_HOSTS}; img-src data:"
)
DBT_DOCS_CSP = (
    f"sandbox allow-scripts; {_COMMON}; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:"
)

DBT_DOCS_INDEX = f"{RunArtifacts.DBT_DOCS}/index.html"
# dbt's index.html holds these literals; ``dbt docs generate --static`` puts the files there
DBT_DOCS_INLINED = {
    b'"MANIFEST.JSON INLINE DATA"': f"{RunArtifacts.DBT_DOCS}/manifest.json",
    b'"CATALOG.JSON INLINE DATA"': f"{RunArtifacts.DBT_DOCS}/catalog.json",
}


@dataclass(frozen=True)
class FileKind:
    name: str
    media_type: str
    csp: str


REPORT = FileKind("report", "text/html; charset=utf-8", REPORT_CSP)
MODEL_CARD_TEXT = FileKind("model card", "text/plain; charset=utf-8", TEXT_CSP)
MODEL_CARD_HTML = FileKind("model card", "text/html; charset=utf-8", REPORT_CSP)
RECORD = FileKind("record", "application/json", TEXT_CSP)
DATA_DOCS = FileKind("Data Docs", "text/html; charset=utf-8", DATA_DOCS_CSP)
DBT_DOCS = FileKind("dbt docs", "text/html; charset=utf-8", DBT_DOCS_CSP)

ALLOWED = {
    RunArtifacts.REPORT: REPORT,
    RunArtifacts.MODEL_CARD: MODEL_CARD_TEXT,
    RunArtifacts.MODEL_CARD.removesuffix(".md") + ".html": MODEL_CARD_HTML,
    RunArtifacts.METRICS: RECORD,
    RunArtifacts.DECISION: RECORD,
    DBT_DOCS_INDEX: DBT_DOCS,
}


class Refused(Exception):
    """A file the page will not hand out; ``status`` and a message that says why and where to look instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def kind_of(path: str) -> FileKind:
    """How ``path`` (inside a release) is served, or ``Refused`` (403) when it is not one the page serves."""
    if path in ALLOWED:
        return ALLOWED[path]
    if path.startswith(RunArtifacts.DATA_DOCS + "/") and path.endswith(".html") and ".." not in path.split("/"):
        return DATA_DOCS
    if path == RunArtifacts.MODEL_DIR or path.startswith(RunArtifacts.MODEL_DIR + "/"):
        raise Refused(
            403,
            f"{path} is part of the model (SavedModel and weights hold every shopper's embedding and recent "
            "items): the models page does not hand it out; read it from the bucket with the pipeline's credentials",
        )
    if path == RunArtifacts.RECOMMENDATIONS or path.endswith((".parquet", ".csv", ".jsonl")):
        raise Refused(
            403,
            f"{path} is a recommendation table (personal data): the models page does not hand it out; "
            "query the `recommendations` table in MySQL with an analyst's login",
        )
    raise Refused(
        403,
        f"{path} is not one of the files the models page serves (report, model card, metrics, "
        "gate decision, Data Docs and dbt docs)",
    )


def too_large(path: str, size: int, limit: int) -> Refused:
    return Refused(
        413,
        f"{path} is {size:,} bytes, more than the models page serves ({limit:,} bytes, "
        "RECSYS_MODELS_PAGE_MAX_FILE_BYTES): read it from the bucket",
    )


def chunks(body) -> Iterator[bytes]:
    """An S3 object's body in chunks, closed at the end (or when the client goes away)."""
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def script_safe(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """JSON made safe inside a ``<script>``: ``</`` becomes ``<\\/`` (the same JSON), across chunk edges too."""
    carry = b""
    for piece in pieces:
        piece = carry + piece
        carry = b"<" if piece.endswith(b"<") else b""
        yield (piece[:-1] if carry else piece).replace(b"</", b"<\\/")
    yield carry


def inline_dbt_docs(index: bytes, parts: dict[bytes, Iterator[bytes]]) -> Iterator[bytes]:
    """dbt's index.html with each placeholder replaced by its JSON file, streamed in order.

    Checked before anything streams: a page without the placeholders is refused (404) while
    an error status can still be sent.
    """
    positions = sorted((index.find(marker), marker) for marker in parts)
    missing = [marker.decode() for position, marker in positions if position < 0]
    if missing:
        raise Refused(404, f"{DBT_DOCS_INDEX} is not dbt's docs page (no {', '.join(missing)} in it)")
    return _inlined(index, positions, parts)


def _inlined(index: bytes, positions: list[tuple[int, bytes]], parts: dict[bytes, Iterator[bytes]]) -> Iterator[bytes]:
    start = 0
    for position, marker in positions:
        yield index[start:position]
        yield from script_safe(parts[marker])
        start = position + len(marker)
    yield index[start:]
