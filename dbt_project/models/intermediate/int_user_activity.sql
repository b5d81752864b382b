{{
    config(
        materialized='incremental',
        unique_key=['user_id'],
        cluster_by=['user_id'],
        pre_hook=["{{ drop_touched_users() }}", "{{ create_touched_users('stg_raw__events', 'loaded_at') }}"],
        post_hook=["{{ drop_touched_users() }}"],
    )
}}

-- one row per user with at least one staged event on a product: what they did, how much
-- and when (the activity, RFM and basket counts of user_features), over every product
-- event of any type.
{#-
    Its own model, not a CTE of user_features: it reads only the staged events, so dbt
    builds it beside int_interactions and the splits, while user_features waits for
    item_features and user_top_categories. In user_features this scan of every staged
    event (10M at 10M events) ran last, alone on one thread, at the end of the build.
    A GROUP BY over stg_raw__events in its clustered (user_id, ...) order: it streams, and
    the table comes out clustered on user_id, which user_features joins on.

    Incremental: a user's row depends on their own events alone, so a build after new
    events recomputes the users who have new staged events (macros/touched_keys.sql)
    from all of their events and updates their rows in place
    (macros/incremental_delete.sql).
#}

with

events as (

    {{ rows_of_touched_users('stg_raw__events') }}

),

product_events as (

    select
        *,
        -- a basket is the basket id, or the user's calendar day when there is none
        coalesce(basket_id, date_format(event_at, '%Y-%m-%d')) as basket_key,
        is_return = 0 and event_type = 'purchase' as is_purchase
    from events
    where is_product = 1

),

aggregated as (

    select
        user_id,
        sum(is_purchase) as n_purchases,
        sum(is_return) as n_returns,
        sum(event_type = 'view') as n_views,
        sum(event_type in ('cart', 'add_to_cart')) as n_carts,
        count(*) as n_events,
        count(distinct item_id) as n_distinct_items,
        count(distinct case when is_purchase then basket_key end) as n_baskets,
        count(distinct date_format(event_at, '%Y-%m')) as n_active_months,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at,
        round({{ exact_sum('case when is_purchase and quantity > 0 and price > 0 then quantity * price end') }}, 2)
            as monetary,
        {{ exact_avg('case when is_purchase and price > 0 then price end') }} as avg_unit_price
    from product_events
    group by user_id

),

final as (

    select
        user_id,
        cast(n_purchases as unsigned) as n_purchases,
        cast(n_returns as unsigned) as n_returns,
        cast(n_views as unsigned) as n_views,
        cast(n_carts as unsigned) as n_carts,
        n_events,
        n_distinct_items,
        n_baskets,
        n_active_months,
        first_event_at,
        last_event_at,
        monetary,
        avg_unit_price
    from aggregated

)

select * from final
