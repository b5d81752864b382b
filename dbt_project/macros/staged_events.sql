-- sqlfluff:exclude_rules:LT02
{#- sqlfluff misreads the indentation of the multi-line plausible_event_time_range() in these macros -#}
{#-
    valid_raw_events(new_rows_only): SQL selecting the raw events staging keeps before
    duplicates are dropped -- ids trimmed, event type lower-cased, the loader's event_at
    to the second, rows without a user, item, type or plausible time left out
    (stg_raw__rejected_events gives them their reason). With `new_rows_only` (by default
    in an incremental build) only the raw rows loaded since the last recorded build.

    staged_raw_events(): what stg_raw__events reads: valid_raw_events() in a full build;
    in an incremental one the session table create_new_raw_events() filled with them (a
    pre-hook, dropped again by drop_new_raw_events()), read once from the raw table.

    later_copies(new_rows_only): the source_row_id of every later copy of an event among
    the same rows, stg_raw__event_copies' query, a model of its own so that it runs
    beside stg_item_kinds instead of inside stg_raw__events, which every other model
    waits for (it was that model's pre-hook: 28 s of the 10M full build's 106 s there).

    Why this way: an exact duplicate is the same user, item, type, value, quantity,
    price, time and basket. A window partitioned by those eight columns sorted every
    event with all its columns (a 10M-event sort spilled past the session's memory and
    grew 20x); grouping a 16-byte MD5 of the eight cleaned values of every event cost
    the 10M-event pre-hook 50-106 s, most of it the digests and the list of first copies
    (as many as the events) that the model then looked up row by row. Two copies of an
    event share their user, item and time, so the digest is needed only where those
    three repeat: one narrow GROUP BY finds those moments (5,740 at 10M events) and
    their events' ids; only those rows are read again, by primary key, and digested --
    the same MD5 as before, of the eight values with lengths and NULL flags, so no two
    different events write the same text -- and every copy after the lowest
    source_row_id of its digest is listed. The model leaves those few out. The same copies as the digest of every event found:
    equal digests mean byte-equal user, item and time, so both rows share a moment (a
    CRC collision or a collation that folds case only adds candidates). At 10M events,
    back to back: the pre-hook 88.5 -> 41.8-47.7 s, the model's lookups (IN over 10M
    first copies, NOT IN over 5,299 later ones) 65.8-76.5 -> 51.4-53.7 s.
-#}
{% macro valid_raw_events(new_rows_only=none) -%}
    {%- set new_rows_only = is_incremental() if new_rows_only is none else new_rows_only -%}
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
    where
        {%- if new_rows_only %}
            -- first: MariaDB tests the conditions in the order written, so the trims run
            -- on the new rows only. The last recorded build's watermark, a one-row
            -- lookup that MariaDB evaluates while planning, so raw_events' loaded_at index
            -- reads the new rows alone; the newest loaded_at staged here (the max of a
            -- 10M-row table, a subquery left to run time) made it a scan, 8 s at 10M
            -- events. Rows a failed build staged after that watermark are read again and
            -- merged in place on source_row_id: the same rows.
            loaded_at > {{ last_build_watermark() }} and
        {%- endif %}
        user_id is not null
        and item_id is not null
        and event_type is not null
        and event_at is not null
        and event_at between {{ plausible_event_time_range() }}
{%- endmacro %}


{% macro staged_raw_events() -%}
    {%- if is_incremental() -%}
        select * from {{ new_raw_events_relation() }}
    {%- else -%}
        {{ valid_raw_events() }}
    {%- endif -%}
{%- endmacro %}


{% macro new_raw_events_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__new_rows
{%- endmacro %}


{% macro create_new_raw_events() -%}
    {%- if is_incremental() -%}
        create temporary table {{ new_raw_events_relation() }}
            (primary key (user_id, item_id, source_row_id), unique key (source_row_id))
        {{ valid_raw_events() }}
    {%- else -%}
        {{ drop_new_raw_events() }}
    {%- endif -%}
{%- endmacro %}


{% macro drop_new_raw_events() -%}
    drop temporary table if exists {{ new_raw_events_relation() }}
{%- endmacro %}


{#-
    later_copies(new_rows_only): SQL selecting the source_row_id of every later copy of an
    event (stg_raw__event_copies' query): among all raw events, or among those loaded
    since the last recorded build.
-#}
{% macro later_copies(new_rows_only) -%}
    select source_row_id from (
        select
            valid.source_row_id,
            row_number() over (
                partition by unhex(md5(concat_ws(
                    '|',
                    char_length(valid.user_id), char_length(valid.item_id), char_length(valid.event_type),
                    char_length(valid.basket_id),
                    valid.event_value is null, valid.quantity is null, valid.price is null, valid.basket_id is null,
                    valid.event_value, valid.quantity, valid.price, valid.event_at,
                    concat(valid.user_id, valid.item_id, valid.event_type, coalesce(valid.basket_id, ''))
                )))
                order by valid.source_row_id
            ) as copy_number
        from (
            -- the moments (user and item, to a CRC, and time) that more than one event shares, with
            -- their events' ids: a sort of 12-byte keys, the ids gathered for the few that repeat
            select sql_big_result json_arrayagg(source_row_id) as source_row_ids
            from ({{ valid_raw_events(new_rows_only) }}) as grouped
            group by crc32(concat_ws('|', user_id, item_id)), event_at
            having count(*) > 1
        ) as shared_moments
        cross join json_table(
            shared_moments.source_row_ids, '$[*]' columns (source_row_id bigint path '$')
        ) as candidates
        -- each candidate's cleaned values, read by the raw table's primary key
        inner join ({{ valid_raw_events(new_rows_only) }}) as valid
            on valid.source_row_id = candidates.source_row_id
    ) as numbered
    where copy_number > 1
{%- endmacro %}
