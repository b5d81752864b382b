{{
    config(
        materialized='incremental',
        meta={'tests_read_changed_users': true},
        unique_key=['user_id', 'item_id'],
        cluster_by=['user_id', 'item_id'],
        pre_hook=["{{ drop_touched_pairs() }}", "{{ create_touched_pairs() }}"],
        post_hook=[
            "{{ drop_touched_pairs() }}",
            create_index(['first_source_row_id'], unique=true),
        ]
    )
}}

-- one row per (user, item) with at least one positive event (seed event_weights) on
-- a product; fee / adjustment lines, returns, non-positive quantities and prices
-- are left out.
{#-
    Incremental: only the (user, item) pairs with events that arrived since the last
    build are recomputed, from all of their staged events, and replace their rows
    (updated in place on the unique key, see macros/incremental_delete.sql). The pairs
    are a session table filled by the pre-hook (macros/touched_keys.sql), so the query
    reads only their events by the clustered key instead of every staged event.

    Clustered on (user_id, item_id) like stg_raw__events: the GROUP BY reads the staged
    events in its own order and streams, with no temporary table, at any size; the
    splits and profiles downstream read it per user the same way. The event weight
    is a CASE over the seed's rows (macros/event_weight.sql): joined, MariaDB reads
    the seed first and the events in no particular order; as a correlated subquery
    it cost 30 s per 10M events.

    One secondary index, for the unique test of first_source_row_id. Indexes on
    item_id and last_loaded_at cost 10 and 7 s at 10M events on the build's longest
    path, and nothing needs them: item_features counts users per item from the clustered
    table (2.2 s at 10M events), and the incremental watermark is one max() per build.
#}

with

events as (

    select * from {{ ref('stg_raw__events') }}

),

weighted_events as (

    select
        events.user_id,
        events.item_id,
        events.source_row_id,
        events.event_at,
        events.quantity,
        events.loaded_at,
        {{ event_weight('events.event_type') }} as weight
    from events
    {% if is_incremental() -%}
        inner join {{ touched_pairs_relation() }} as touched_pairs
            on touched_pairs.user_id = events.user_id
            and touched_pairs.item_id = events.item_id
    {%- endif %}
    where {{ positive_product_event('events') }}

),

positive_events as (

    select * from weighted_events
    where weight is not null

),

final as (

    -- first_source_row_id breaks ties of first_event_at: the lowest source row at the
    -- pair's first time, taken in the same GROUP BY as the minimum of the fixed-width
    -- text "time + zero-padded row id" (a window or a join back costs 2-3x here)
    select
        user_id,
        item_id,
        min(event_at) as first_event_at,
        cast(substring(
            min(concat(date_format(event_at, '%Y%m%d%H%i%s'), lpad(source_row_id, 20, '0'))), 15
        ) as unsigned) as first_source_row_id,
        max(event_at) as last_event_at,
        count(*) as n_events,
        {{ exact_sum('weight') }} as weight,
        {{ exact_sum('quantity') }} as quantity_total,
        max(loaded_at) as last_loaded_at
    from positive_events
    group by user_id, item_id

)

select * from final
