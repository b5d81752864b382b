{{
    config(
        cluster_by=['item_id'],
        post_hook=[
            create_index(['category']),
            create_index(['popularity_rank']),
        ]
    )
}}

-- one row per product (is_product = 1) with at least one staged event. "Now" for the
-- recent-popularity windows is the newest event_at in the data, so reruns on the
-- same data give the same values. Rates are DOUBLE: integer division in MariaDB
-- gives a DECIMAL rounded to 4 places (div_precision_increment).
{#-
    The per-item event counts, sums and times come from int_item_event_totals, the
    buyers from int_item_buyers and the purchase prices from int_item_price_lines,
    which a build after new events updates with those events alone: this model
    reads no staged event. Read from stg_raw__events here, they cost 39 s of a 160 s
    next-day build at 10M events (bench/README.md). Averages are their exact sums
    divided by their counts (macros/exact_aggregates.sql), the same in any build.

    Recent popularity (n_users_<days>d) counts the rows of int_interactions -- the same
    (user, item) pairs as n_users -- whose last positive event falls in the window, in
    the one GROUP BY per item over int_interactions. Counted from the events, as
    count(distinct user_id) per item and window, it made MariaDB sort every staged
    event with its whole row by item (82 of the model's 107 s at 10M events), and
    counted users int_interactions leaves out (a zero price or quantity), so
    n_users_90d could exceed n_users.

    Clustered on item_id (macros/create_table_as.sql): user_features looks up every
    interaction's item here, one B-tree descent each instead of a secondary index's
    two (its price level at 10M events: 16.7 -> 11.0 s).
#}

{%- set windows = var('popularity_windows_days') %}

with

item_totals as (

    select * from {{ ref('int_item_event_totals') }}

),

items as (

    select * from {{ ref('stg_raw__items') }}

),

item_categories as (

    select * from {{ ref('int_item_categories') }}

),

interactions as (

    select * from {{ ref('int_interactions') }}

),

buyers as (

    select * from {{ ref('int_item_buyers') }}

),

price_lines as (

    select * from {{ ref('int_item_price_lines') }}

),

data_end as (

    -- the newest staged event of any item, product or not
    select max(last_seen_at) as max_event_at from item_totals

),

event_stats as (

    select
        item_id,
        n_purchases,
        n_returns,
        n_views,
        cast(rating_sum / nullif(n_ratings, 0) as double) as avg_rating,
        n_events,
        cast(unit_price_sum / nullif(n_unit_prices, 0) as double) as avg_unit_price,
        first_seen_at,
        last_seen_at
    from item_totals
    where is_product = 1

),

repeat_stats as (

    select
        item_id,
        count(*) as n_buyers,
        sum(n_baskets >= 2) as n_repeat_buyers
    from buyers
    group by item_id

),

modal_prices as (

    select
        item_id,
        price as modal_unit_price,
        row_number() over (
            partition by item_id
            order by n_lines desc, price asc
        ) as price_order
    from price_lines

),

user_counts as (

    select
        interactions.item_id,
        {%- for days in windows %}
            sum(
                interactions.last_event_at > data_end.max_event_at - interval {{ days | int }} day
            ) as n_users_{{ days | int }}d,
        {%- endfor %}
        count(*) as n_users
    from interactions
    cross join data_end
    group by interactions.item_id

),

joined as (

    select
        event_stats.item_id,
        items.title,
        coalesce(item_categories.category, 'other') as category,
        coalesce(item_categories.category_source, 'none') as category_source,
        coalesce(items.price, modal_prices.modal_unit_price) as price,
        event_stats.avg_unit_price,
        coalesce(user_counts.n_users, 0) as n_users,
        {%- for days in windows %}
            cast(coalesce(user_counts.n_users_{{ days | int }}d, 0) as signed) as n_users_{{ days | int }}d,
        {%- endfor %}
        cast(event_stats.n_purchases as unsigned) as n_purchases,
        cast(event_stats.n_returns as unsigned) as n_returns,
        cast(event_stats.n_views as unsigned) as n_views,
        event_stats.avg_rating,
        coalesce(repeat_stats.n_buyers, 0) as n_buyers,
        coalesce(repeat_stats.n_repeat_buyers, 0) as n_repeat_buyers,
        event_stats.n_events,
        event_stats.first_seen_at,
        event_stats.last_seen_at
    from event_stats
    left join items
        on items.item_id = event_stats.item_id
    left join item_categories
        on item_categories.item_id = event_stats.item_id
    left join modal_prices
        on modal_prices.item_id = event_stats.item_id
        and modal_prices.price_order = 1
    left join user_counts
        on user_counts.item_id = event_stats.item_id
    left join repeat_stats
        on repeat_stats.item_id = event_stats.item_id

),

final as (

    select
        item_id,
        title,
        category,
        category_source,
        price,
        case
            when price is not null then ntile(5) over (partition by price is null order by price, item_id)
        end as price_band,
        avg_unit_price,
        n_users,
        {%- for days in windows %}
            n_users_{{ days | int }}d,
        {%- endfor %}
        n_purchases,
        n_returns,
        case
            when n_purchases + n_returns > 0
                then cast(n_returns as double) / (n_purchases + n_returns)
            else 0
        end as return_rate,
        n_views,
        case when n_views > 0 then least(cast(n_purchases as double) / n_views, 1) end as conversion_rate,
        avg_rating,
        n_buyers,
        case when n_buyers > 0 then cast(n_repeat_buyers as double) / n_buyers end as repeat_rate,
        n_events,
        row_number() over (
            order by n_users desc, n_purchases desc, item_id asc
        ) as popularity_rank,
        first_seen_at,
        last_seen_at
    from joined

)

select * from final
