{{
    config(
        materialized='table',
        cluster_by=['source_row_id'],
    )
}}

-- the source_row_id of every later copy of a raw event (same user, item, type, value,
-- quantity, price, time and basket as an event with a lower source_row_id) among the
-- rows stg_raw__events reads in this build: all raw events in a full build, those loaded
-- since the last recorded build in an incremental one. stg_raw__events leaves them out.
{#
    A model of its own, not a pre-hook of stg_raw__events: every other model waits for
    stg_raw__events, so its 106 s at 10M events ran with the build's second thread idle;
    this query (28 s of them) runs beside stg_item_kinds instead (macros/staged_events.sql
    says how the copies are found). Whether stg_raw__events is built incrementally is
    decided as dbt does for it (its table is there and no --full-refresh); it is looked up
    by name, since a ref() would make it a parent of this model, not a child.
#}
{%- set staged = adapter.get_relation(database=this.database, schema=this.schema, identifier='stg_raw__events')
    if execute else none -%}

{{ later_copies(new_rows_only=staged is not none and not flags.FULL_REFRESH) }}
