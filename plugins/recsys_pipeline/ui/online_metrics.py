"""What shoppers did with each model's lists, for the models page: dbt's ``online_metrics``, summed per model.

The offline metrics say how a release ranked a held-out month; these say how its lists did
once served (``recsys serve`` logs them, the features run builds the table). Read from
MySQL when the page is drawn; a warehouse that cannot be reached, or that has never built
the table, leaves the column empty rather than the page broken.
"""

from __future__ import annotations

import logging

import MySQLdb

from recsys_pipeline import warehouse
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

SQL = """
SELECT dataset, model_version, SUM(lists_served), SUM(items_shown), SUM(items_clicked), SUM(items_carted),
       SUM(items_purchased), MIN(served_on), MAX(served_on)
FROM online_metrics GROUP BY dataset, model_version
"""


def online_by_model(settings: MySQLSettings) -> dict[tuple[str, str], dict]:
    """(dataset, model version) -> lists served, items shown and the click/cart/purchase rates per item shown."""
    try:
        with warehouse.connect(settings) as conn:
            cur = conn.cursor()
            cur.execute(SQL)
            rows = cur.fetchall()
    except MySQLdb.Error as error:
        log.info("no online metrics for the models page (%s)", error)
        return {}
    out = {}
    for dataset, version, lists, shown, clicked, carted, bought, first, last in rows:
        shown = int(shown or 0)
        out[(dataset, version)] = {
            "lists_served": int(lists or 0),
            "items_shown": shown,
            "click_rate": float(clicked or 0) / shown if shown else None,
            "cart_rate": float(carted or 0) / shown if shown else None,
            "purchase_rate": float(bought or 0) / shown if shown else None,
            "days": f"{first} – {last}",
        }
    return out
