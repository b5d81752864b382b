{{
    config(
        post_hook=[create_index(['user_id'], unique=true)]
    )
}}

-- one row per user with at least one staged event on a product: the "user profile"
-- of the source articles (activity by event type, RFM, categories, price level,
-- demographics, and the recent item sequence).
-- Time-relative features use the latest event_at in the staged data as "now",
-- so a rerun on the same data gives the same values.

with

events as (

    select * from {{ ref('stg_raw__events') }}

),

users as (

    select * from {{ ref('stg_raw__users') }}

),

interactions as (

    select * from {{ ref('int_interactions') }}

),

item_features as (

    select * from {{ ref('item_features') }}

),

top_categories as (

    select * from {{ ref('user_top_categories') }}

),

category_profile as (

    select
        user_id,
        count(*) as n_categories,
        max(case when category_rank = 1 then category end) as favourite_category
    from top_categories
    group by user_id

),

top_three_categories as (

    select
        user_id,
        json_arrayagg(category order by category_rank) as top_categories
    from top_categories
    where category_rank <= 3
    group by user_id

),

price_profile as (

    -- the user's price level: the average price band (1 = cheapest fifth of items,
    -- 5 = dearest) of the items they interacted with, rounded
    select
        interactions.user_id,
        cast(round(avg(item_features.price_band)) as unsigned) as price_level
    from interactions
    inner join item_features
        on item_features.item_id = interactions.item_id
    where item_features.price_band is not null
    group by interactions.user_id

),

newest_items as (

    -- the user's most recent items, newest first: an ordered, limited JSON_ARRAYAGG per user,
    -- read in int_interactions' clustered (user_id, item_id) order. A row_number() window over
    -- every interaction sorted all 6.6M of them at 10M events (16.0 s; this and the reversal
    -- below 6.9 s, the same arrays)
    -- (the noqa ranges: sqlfluff's MySQL dialect parses neither an aggregate's LIMIT nor JSON_TABLE)
    select
        user_id,
        -- noqa: disable=all
        json_arrayagg(
            item_id order by last_event_at desc, first_source_row_id desc
            limit {{ var('recent_items_per_user') | int }}
        ) as newest_first
    from interactions
    group by user_id
    -- noqa: enable=all

),

recent_sequences as (

    -- the same items oldest first (the order a sequence model reads), reversed per user
    -- by a subquery over the user's own list: a GROUP BY over every user's listed items
    -- sorted them all (3.5M rows at 10M events: 14.3 s, against 9.2 s)
    select
        newest_items.user_id,
        -- noqa: disable=all
        (
            select json_arrayagg(listed.item_id order by listed.position desc)
            from json_table(
                newest_items.newest_first,
                '$[*]' columns (
                    position for ordinality,
                    item_id text character set utf8mb4 path '$'
                )
            ) as listed
        ) as recent_items
        -- noqa: enable=all
    from newest_items

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
        cast(aggregated.n_baskets as double) / aggregated.n_active_months as frequency,
        aggregated.monetary,
        aggregated.avg_unit_price,
        price_profile.price_level,
        coalesce(category_profile.n_categories, 0) as n_categories,
        category_profile.favourite_category,
        coalesce(top_three_categories.top_categories, json_array()) as top_categories,
        coalesce(recent_sequences.recent_items, json_array()) as recent_items,
        users.country,
        users.attributes
    from aggregated
    cross join data_end
    left join users
        on users.user_id = aggregated.user_id
    left join category_profile
        on category_profile.user_id = aggregated.user_id
    left join top_three_categories
        on top_three_categories.user_id = aggregated.user_id
    left join price_profile
        on price_profile.user_id = aggregated.user_id
    left join recent_sequences
        on recent_sequences.user_id = aggregated.user_id

)

select * from final
