{{
    config(
        materialized='incremental',
        unique_key=['item_id'],
        cluster_by=['item_id'],
    )
}}

-- one row per item of the staged events (products and other lines): event counts, sums
-- and first / last times, the per-item totals item_features' rates and averages divide.
{#-
    Sums and counts, not averages, so a build after new events adds the new events'
    totals to the counted ones instead of reading every staged event again (a full pass
    over stg_raw__events per build was most of item_features' 39 s at 10M events). The
    sums are exact (DECIMAL(38, 12), as macros/exact_aggregates.sql): the same in any
    order of adding, so incremental and full builds give the same table.

    The new events are those loaded after the newest loaded_at already counted here
    (its own watermark, not the last recorded build's), taken from the list of events
    staged since the last build (macros/events_since_last_build.sql) and read by
    stg_raw__events' primary key, not by a scan of it: a retried build whose earlier
    try already added a load's events finds nothing newer and adds nothing twice. One
    statement adds them (dbt's incremental insert ... on duplicate key update), so a
    load is counted all or not at all.
#}

with

{% if is_incremental() -%}
    new_events as (

        -- the staged events loaded after those counted here, from their list (events_since())
        {{ events_since(incremental_watermark('last_loaded_at')) }}

    ),
{%- endif %}

events as (

    select staged.*
    from {{ ref('stg_raw__events') }} as staged
    {% if is_incremental() -%}
        inner join new_events
            on new_events.user_id = staged.user_id
            and new_events.item_id = staged.item_id
            and new_events.source_row_id = staged.source_row_id
    {%- endif %}

),

new_totals as (

    select
        item_id,
        max(is_product) as is_product,
        count(*) as n_events,
        sum(is_return = 0 and event_type = 'purchase') as n_purchases,
        sum(is_return) as n_returns,
        sum(event_type = 'view') as n_views,
        count(case when event_type = 'rating' then event_value end) as n_ratings,
        sum(cast(case when event_type = 'rating' then event_value end as decimal(38, 12))) as rating_sum,
        count(case when is_return = 0 and event_type = 'purchase' and price > 0 then price end) as n_unit_prices,
        sum(
            cast(case when is_return = 0 and event_type = 'purchase' and price > 0 then price end as decimal(38, 12))
        ) as unit_price_sum,
        min(event_at) as first_seen_at,
        max(event_at) as last_seen_at,
        max(loaded_at) as last_loaded_at
    from events
    group by item_id

),

merged as (

    -- incremental: the counted totals plus the new events' (a sum stays NULL until it has a value)
    {% if is_incremental() -%}
        select
            new_totals.item_id,
            new_totals.is_product,
            new_totals.n_events + coalesce(counted.n_events, 0) as n_events,
            new_totals.n_purchases + coalesce(counted.n_purchases, 0) as n_purchases,
            new_totals.n_returns + coalesce(counted.n_returns, 0) as n_returns,
            new_totals.n_views + coalesce(counted.n_views, 0) as n_views,
            new_totals.n_ratings + coalesce(counted.n_ratings, 0) as n_ratings,
            coalesce(new_totals.rating_sum + counted.rating_sum, new_totals.rating_sum, counted.rating_sum)
                as rating_sum,
            new_totals.n_unit_prices + coalesce(counted.n_unit_prices, 0) as n_unit_prices,
            coalesce(
                new_totals.unit_price_sum + counted.unit_price_sum, new_totals.unit_price_sum, counted.unit_price_sum
            ) as unit_price_sum,
            least(new_totals.first_seen_at, coalesce(counted.first_seen_at, new_totals.first_seen_at))
                as first_seen_at,
            greatest(new_totals.last_seen_at, coalesce(counted.last_seen_at, new_totals.last_seen_at))
                as last_seen_at,
            new_totals.last_loaded_at
        from new_totals
        left join {{ this }} as counted
            on counted.item_id = new_totals.item_id
    {%- else -%}
        select * from new_totals
    {%- endif %}

),

final as (

    select
        item_id,
        cast(is_product as unsigned) as is_product,
        n_events,
        cast(n_purchases as unsigned) as n_purchases,
        cast(n_returns as unsigned) as n_returns,
        cast(n_views as unsigned) as n_views,
        n_ratings,
        cast(rating_sum as decimal(38, 12)) as rating_sum,
        n_unit_prices,
        cast(unit_price_sum as decimal(38, 12)) as unit_price_sum,
        first_seen_at,
        last_seen_at,
        last_loaded_at
    from merged

)

select * from final
