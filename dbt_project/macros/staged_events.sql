-- sqlfluff:exclude_rules:LT02
{#- sqlfluff misreads the indentation of the multi-line plausible_event_time_range() in these macros -#}
{#-
    valid_raw_events(): SQL selecting the raw events staging keeps before duplicates are
    dropped -- ids trimmed, event type lower-cased, the loader's event_at to the second,
    rows without a user, item, type or plausible time left out (stg_raw__rejected_events
    gives them their reason). In an incremental build only the raw rows stamped after
    the newest `loaded_at` already staged. Shared by stg_raw__events and its
    first-copies pre-hook, so both read exactly the same rows.

    first_copies_relation(): the session's temporary table of the source_row_id of the
    first copy of every distinct event (create_first_copies() fills it before the
    model's query runs, drop_first_copies() drops it after). The hooks are given as
    '{{ create_first_copies() }}' strings: rendered when the hook runs, in the model's
    context (called in config() they would render at parse time, where source() and
    is_incremental() do not answer for the build).

    Why a temporary table and a hash: an exact duplicate is the same user, item, type,
    value, quantity, price, time and basket. A window partitioned by those eight
    columns sorted every event with all its columns (a 10M-event sort spilled past the
    session's memory and grew 20x); grouping a 16-byte MD5 of the eight cleaned values
    (lengths and NULL flags included, so no two different events write the same text)
    sorts 24 bytes per event, SQL_BIG_RESULT makes it a sort rather than an in-memory
    hash table that spills, and the primary key lets the model join it in order. The
    digests are computed in a derived table the optimizer may not merge (its LIMIT):
    grouping by the MD5 expression itself cost the 10M-event pre-hook 104 s in a
    dbt run, the materialised digests 64 s.
-#}
{% macro valid_raw_events() -%}
    select * from (
        select
            source_row_id,
            nullif(trim(user_id), '') as user_id,
            nullif(trim(item_id), '') as item_id,
            nullif(lower(trim(event_type)), '') as event_type,
            event_value,
            quantity,
            price,
            nullif(trim(basket_id), '') as basket_id,
            cast(event_at as datetime) as event_at,
            load_id,
            loaded_at
        from {{ source('raw', 'raw_events') }}
    ) as cleaned
    where user_id is not null
        and item_id is not null
        and event_type is not null
        and event_at is not null
        and event_at between {{ plausible_event_time_range() }}
        {%- if is_incremental() %} and loaded_at > {{ incremental_watermark('loaded_at') }}{% endif %}
{%- endmacro %}


{% macro first_copies_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__first_copies
{%- endmacro %}


{% macro create_first_copies() -%}
    create temporary table {{ first_copies_relation() }} (primary key (source_row_id))
    select source_row_id from (
        select sql_big_result min(source_row_id) as source_row_id
        from (
            select
                source_row_id,
                unhex(md5(concat_ws(
                    '|',
                    char_length(user_id), char_length(item_id), char_length(event_type), char_length(basket_id),
                    event_value is null, quantity is null, price is null, basket_id is null,
                    event_value, quantity, price, event_at,
                    concat(user_id, item_id, event_type, coalesce(basket_id, ''))
                ))) as event_digest
            from ({{ valid_raw_events() }}) as valid
            -- the LIMIT keeps this derived table from being merged into the GROUP BY: materialised,
            -- the sort reads 24-byte rows; merged, grouping the expression took 94 s instead of 52 s
            -- at 10M events (the same groups; bench/README.md)
            limit 18446744073709551615
        ) as digested
        group by event_digest
    ) as first_copies
    -- inserted in key order: in hash order, 10M inserts into a primary key larger than the
    -- buffer pool took over 9 minutes; sorted first, 10-20 s more than the grouping
    order by source_row_id
{%- endmacro %}


{% macro drop_first_copies() -%}
    drop temporary table if exists {{ first_copies_relation() }}
{%- endmacro %}
