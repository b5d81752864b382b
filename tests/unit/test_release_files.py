"""The models page's allow-list of release files, and the dbt docs page it assembles."""

from __future__ import annotations

import json

import pytest

from recsys_pipeline.ui import release_files
from recsys_pipeline.ui.release_files import Refused, inline_dbt_docs, kind_of, script_safe

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("report.html", release_files.REPORT),
        ("model_card.md", release_files.MODEL_CARD_TEXT),
        ("metrics.json", release_files.RECORD),
        ("decision.json", release_files.RECORD),
        ("data_docs/features/index.html", release_files.DATA_DOCS),
        ("data_docs/raw/validations/raw_events/run/20260101T000000Z/x.html", release_files.DATA_DOCS),
        ("dbt_docs/index.html", release_files.DBT_DOCS),
    ],
)
def test_reading_files_are_allowed(path, kind):
    assert kind_of(path) is kind


@pytest.mark.parametrize(
    "path",
    [
        "two_tower/saved_model/saved_model.pb",
        "two_tower/saved_model/variables/variables.index",
        "two_tower/ranking_mlp.keras",
        "two_tower/embeddings.npz",
        "recommendations.parquet",
        "manifest.json",
        "quality_raw.json",
        "dbt_docs/manifest.json",
        "data_docs/raw/static/styles/x.css",
        "data_docs/../report.html",
        "report.html/",
    ],
)
def test_everything_else_is_refused_with_403(path):
    with pytest.raises(Refused) as refused:
        kind_of(path)
    assert refused.value.status == 403 and path in str(refused.value)


def test_every_csp_sandboxes_and_starts_from_nothing():
    for kind in (release_files.REPORT, release_files.RECORD, release_files.DATA_DOCS, release_files.DBT_DOCS):
        assert kind.csp.startswith("sandbox") and "default-src 'none'" in kind.csp
        assert "allow-same-origin" not in kind.csp and "connect-src" not in kind.csp
    assert "script-src" not in release_files.REPORT_CSP and "allow-scripts" not in release_files.REPORT_CSP


@pytest.mark.parametrize("cut", range(1, 12))
def test_json_inside_a_script_cannot_close_it_wherever_the_chunks_split(cut):
    text = b'{"d": "a </script> b <"}'
    safe = b"".join(script_safe(iter([text[:cut], text[cut:]])))
    assert b"</" not in safe and json.loads(safe) == json.loads(text)


def test_dbt_docs_placeholders_are_replaced_in_order():
    index = b'<script>var n={manifest:"MANIFEST.JSON INLINE DATA",catalog:"CATALOG.JSON INLINE DATA"};</script>'
    parts = {
        b'"MANIFEST.JSON INLINE DATA"': iter([b'{"m"', b": 1}"]),
        b'"CATALOG.JSON INLINE DATA"': iter([b'{"c": 2}']),
    }
    page = b"".join(inline_dbt_docs(index, parts))
    assert page == b'<script>var n={manifest:{"m": 1},catalog:{"c": 2}};</script>'


def test_a_page_without_the_placeholders_is_not_served_as_dbt_docs():
    with pytest.raises(Refused) as refused:
        list(inline_dbt_docs(b"<html>not dbt</html>", {b'"MANIFEST.JSON INLINE DATA"': iter([b"{}"])}))
    assert refused.value.status == 404
