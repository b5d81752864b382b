{#-
    events_since_last_build_relation(): a table beside stg_raw__events with the key and
    loaded_at of every staged event loaded after the last recorded build
    (last_build_watermark()): what an incremental build has to fold in. The models that
    find their touched users or pairs, or add new events to their totals, read it instead
    of stg_raw__events: a scan of the 10M staged events for their newest loaded_at cost
    4-7 s each, seven times per next-day build at 10M events (bench/README.md).

    stg_raw__events' post-hooks keep it (record_events_since_last_build()): an incremental
    run drops the rows the last recorded build already folded in and adds the events it
    staged, so it holds every staged event loaded after that build even when a build
    stopped halfway and is tried again (its rows stay until a build succeeds). A full
    run fills it from the table -- empty when no build is recorded: then the next build
    is a full one too, or this one succeeds and nothing is newer than it.

    events_since(watermark): SQL selecting user_id, item_id, source_row_id and loaded_at
    of the staged events loaded after `watermark`, from the table, or from
    stg_raw__events itself when the table is missing (a model built on its own, without
    stg_raw__events in the same invocation, before the table existed).
-#}
{#- stg_raw__events' own hooks name the table by `this`: a ref to itself would be a cycle -#}
{% macro events_since_last_build_relation(staged=none) -%}
    {%- set staged = staged or ref('stg_raw__events') -%}
    {{ staged.schema }}.{{ staged.identifier }}__since_last_build
{%- endmacro %}


{% macro events_since(watermark) -%}
    {%- set staged = ref('stg_raw__events') -%}
    {%- set recorded = adapter.get_relation(
        database=staged.database, schema=staged.schema, identifier=staged.identifier ~ '__since_last_build'
    ) if execute else none -%}
    select user_id, item_id, source_row_id, loaded_at
    from {{ recorded if recorded is not none else staged }}
    where loaded_at > {{ watermark }}
{%- endmacro %}


{#- stg_raw__events' post-hooks, in this order -#}
{% macro create_events_since_last_build() -%}
    create table if not exists {{ events_since_last_build_relation(this) }} (
        primary key (user_id, item_id, source_row_id)
    )
    select user_id, item_id, source_row_id, loaded_at from {{ this }} where false
{%- endmacro %}


{% macro forget_events_of_last_build() -%}
    {%- if is_incremental() -%}
        delete from {{ events_since_last_build_relation(this) }} where loaded_at <= {{ last_build_watermark() }}
    {%- else -%}
        truncate table {{ events_since_last_build_relation(this) }}
    {%- endif -%}
{%- endmacro %}


{% macro add_events_since_last_build() -%}
    {%- if is_incremental() -%}
        -- the events this run staged (a run tried again finds those of its first try there)
        insert ignore into {{ events_since_last_build_relation(this) }} (user_id, item_id, source_row_id, loaded_at)
        select new_rows.user_id, new_rows.item_id, new_rows.source_row_id, new_rows.loaded_at
        from {{ new_raw_events_relation() }} as new_rows
        inner join {{ this }} as staged
            on staged.user_id = new_rows.user_id
            and staged.item_id = new_rows.item_id
            and staged.source_row_id = new_rows.source_row_id
    {%- elif build_recorded() -%}
        insert into {{ events_since_last_build_relation(this) }} (user_id, item_id, source_row_id, loaded_at)
        select user_id, item_id, source_row_id, loaded_at from {{ this }}
        where loaded_at > {{ last_build_watermark() }}
    {%- else -%}
        do 0
    {%- endif -%}
{%- endmacro %}


{% macro analyze_events_since_last_build() -%}
    analyze table {{ events_since_last_build_relation(this) }}
{%- endmacro %}
