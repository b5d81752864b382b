{{
    config(
        post_hook=[create_index(['item_id'])]
    )
}}

-- one row per product (is_product = 1) with at least one staged event.

with

events as (

    select * from {{ ref('stg_raw__events') }}

),

items as (

    select * from {{ ref('stg_raw__items') }}

),

interactions as (

    select * from {{ ref('int_interactions') }}

),

product_events as (

    select
        *,
        is_return = 0 and event_type = 'purchase' as is_purchase
    from events
    where is_product = 1

),

event_stats as (

    select
        item_id,
        sum(is_purchase) as n_purchases,
        sum(is_return) as n_returns,
        count(*) as n_events,
        avg(case when is_purchase and price > 0 then price end) as avg_unit_price,
        min(event_at) as first_seen_at,
        max(event_at) as last_seen_at
    from product_events
    group by item_id

),

price_counts as (

    select
        item_id,
        price,
        count(*) as n_lines
    from product_events
    where is_purchase and price > 0
    group by item_id, price

),

modal_prices as (

    select
        item_id,
        price as modal_unit_price,
        row_number() over (
            partition by item_id
            order by n_lines desc, price
        ) as price_order
    from price_counts

),

user_counts as (

    select
        item_id,
        count(*) as n_users
    from interactions
    group by item_id

),

joined as (

    select
        event_stats.item_id,
        items.title,
        items.category,
        coalesce(items.price, modal_prices.modal_unit_price) as price,
        event_stats.avg_unit_price,
        coalesce(user_counts.n_users, 0) as n_users,
        cast(event_stats.n_purchases as unsigned) as n_purchases,
        cast(event_stats.n_returns as unsigned) as n_returns,
        event_stats.n_events,
        event_stats.first_seen_at,
        event_stats.last_seen_at
    from event_stats
    left join items
        on items.item_id = event_stats.item_id
    left join modal_prices
        on modal_prices.item_id = event_stats.item_id
        and modal_prices.price_order = 1
    left join user_counts
        on user_counts.item_id = event_stats.item_id

),

final as (

    select
        item_id,
        title,
        category,
        price,
        avg_unit_price,
        n_users,
        n_purchases,
        n_returns,
        case
            when n_purchases + n_returns > 0
                then n_returns / (n_purchases + n_returns)
            else 0
        end as return_rate,
        n_events,
        row_number() over (
            order by n_users desc, n_purchases desc, item_id
        ) as popularity_rank,
        first_seen_at,
        last_seen_at
    from joined

)

select * from final
