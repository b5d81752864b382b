{{
    config(
        post_hook=[create_index(['user_id'])]
    )
}}

-- one row per user with at least one staged event on a product.
-- Time-relative features use the latest event_at in the staged data as "now",
-- so a rerun on the same data gives the same values.

with

events as (

    select * from {{ ref('stg_raw__events') }}

),

users as (

    select * from {{ ref('stg_raw__users') }}

),

data_end as (

    select max(event_at) as max_event_at from events

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
        round(sum(case when is_purchase and quantity > 0 and price > 0 then quantity * price end), 2) as monetary,
        avg(case when is_purchase and price > 0 then price end) as avg_unit_price
    from product_events
    group by user_id

),

final as (

    select
        aggregated.user_id,
        cast(aggregated.n_purchases as unsigned) as n_purchases,
        cast(aggregated.n_returns as unsigned) as n_returns,
        cast(aggregated.n_views as unsigned) as n_views,
        cast(aggregated.n_carts as unsigned) as n_carts,
        aggregated.n_events,
        aggregated.n_distinct_items,
        aggregated.n_baskets,
        aggregated.n_active_months,
        aggregated.first_event_at,
        aggregated.last_event_at,
        datediff(data_end.max_event_at, aggregated.last_event_at) as recency_days,
        aggregated.n_baskets / aggregated.n_active_months as frequency,
        aggregated.monetary,
        aggregated.avg_unit_price,
        users.country
    from aggregated
    cross join data_end
    left join users
        on users.user_id = aggregated.user_id

)

select * from final
