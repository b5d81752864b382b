{{
    config(
        materialized='incremental',
        meta={'tests_read_changed_users': true},
        unique_key=['user_id', 'item_id', 'event_date'],
        cluster_by=['user_id', 'item_id', 'event_date'],
        pre_hook=["{{ drop_touched_pairs() }}", "{{ create_touched_pairs() }}"],
        post_hook=["{{ drop_touched_pairs() }}"],
    )
}}

-- one row per (user, item, day) with at least one positive event: how often and how
-- recently a shopper bought an item, which the repeat-buying features, the "buy
-- again" ranking and TIFU-KNN read (int_interactions keeps one row per pair only).
{#-
    The same positive events as int_interactions (seed event_weights, products, no
    returns, quantity and price above zero when set). Incremental like it: a build
    after new raw rows recomputes every day of the (user, item) pairs they touch and
    replaces those rows. Clustered on (user_id, item_id, event_date), so the GROUP BY
    streams in the order stg_raw__events is stored in.
#}

with

events as (

    select * from {{ ref('stg_raw__events') }}

),

positive_events as (

    select
        events.user_id,
        events.item_id,
        events.event_at,
        events.loaded_at
    from events
    {% if is_incremental() -%}
        inner join {{ touched_pairs_relation() }} as touched_pairs
            on touched_pairs.user_id = events.user_id
            and touched_pairs.item_id = events.item_id
    {%- endif %}
    where {{ positive_product_event('events') }}
        -- a scalar lookup per row, as in int_interactions: as a semi-join MariaDB reads the seed first
        and {{ event_weight('events.event_type') }} is not null

),

final as (

    -- sql_big_result: group by sorting the rows, not in a temporary table keyed on the groups.
    -- The day is not in stg_raw__events' clustered order, so the GROUP BY cannot stream; its keyed
    -- temporary table holds ~550-byte rows (the ids at full VARCHAR width) and went to disk past
    -- ~1M groups: 34x slower at 10M events than at 1M. Sorted, it stays linear (bench/README.md).
    select sql_big_result
        user_id,
        item_id,
        cast(event_at as date) as event_date,
        count(*) as n_events,
        max(loaded_at) as last_loaded_at
    from positive_events
    group by user_id, item_id, cast(event_at as date)

)

select * from final
