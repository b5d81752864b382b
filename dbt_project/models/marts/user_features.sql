{{
    config(
        sql_header=(
            "set statement optimizer_switch = 'split_materialized=off' for"
            if target.type == 'mariadb' else none
        ),
        materialized='incremental',
        unique_key='user_id',
        pre_hook=['{{ drop_touched_users() }}', '{{ create_profile_touched_users() }}'],
        post_hook=[
            '{{ drop_touched_users() }}',
            create_index(['user_id'], unique=true),
            '{{ update_recency_days() }}',
            '{{ drop_categories_seen() }}',
            '{{ record_categories_seen() }}',
            '{{ drop_price_bands_seen() }}',
            '{{ record_price_bands_seen() }}',
        ]
    )
}}

-- one row per user with at least one staged event on a product: the "user profile"
-- of the source articles (activity by event type, RFM, categories, price level,
-- demographics, and the recent item sequence).
-- Time-relative features use the latest event_at in the staged data as "now",
-- so a rerun on the same data gives the same values.
{#-
    The activity counts come from int_user_activity, built beside int_interactions;
    this model joins per-user profiles, each computed once over its whole table.
    MariaDB otherwise chose a "split materialization" (LATERAL DERIVED): each grouped
    CTE recomputed per shopper from an index, with a temporary table and a sort each
    time -- at 10M events 200k of them, 46.1 s for the query against 29.7 s with the
    optimizer switch off for this statement (the same rows). The switch and SET
    STATEMENT are MariaDB's; a MySQL target (type mysql) builds without them.

    Incremental: a build after new events redoes the profiles of the users with new
    events and of those a category, price band or user-row change reaches
    (macros/profile_changes.sql), reading only their rows of the per-user inputs
    (activity, interactions, categories; the per-item and user tables in full), replaces them
    (delete + insert on user_id), then moves every other profile's recency_days to the
    new newest event. A full build reads every interaction twice (35.2 s of the 160 s
    next-day build at 10M events, bench/README.md). "Now" is the newest event of
    int_item_event_totals, the newest staged event, read from 20,000 rows instead of
    10M.
#}

-- the hooks read these too (macros/profile_changes.sql, macros/category_changes.sql):
-- depends_on: {{ ref('stg_raw__events') }}
-- depends_on: {{ ref('int_item_categories') }}

with

item_totals as (

    select * from {{ ref('int_item_event_totals') }}

),

activity as (

    {{ rows_of_touched_users('int_user_activity') }}

),

users as (

    select * from {{ ref('stg_raw__users') }}

),

interactions as (

    {{ rows_of_touched_users('int_interactions') }}

),

item_features as (

    select * from {{ ref('item_features') }}

),

top_categories as (

    {{ rows_of_touched_users('user_top_categories') }}

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
        {{ ordered_json_array('category', 'category_rank') }} as top_categories
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

    -- the user's most recent items, newest first: an ordered, limited JSON array per user
    -- (macros/ordered_json_array.sql), read in int_interactions' clustered (user_id, item_id)
    -- order. A row_number() window over every interaction sorted all 6.6M of them at 10M
    -- events (16.0 s; this and the reversal below 6.9 s, the same arrays)
    -- (the noqa ranges: sqlfluff's MySQL dialect parses neither an aggregate's LIMIT nor JSON_TABLE)
    select
        user_id,
        -- noqa: disable=all
        {{ ordered_json_array(
            'item_id', 'last_event_at desc, first_source_row_id desc', var('recent_items_per_user')
        ) }} as newest_first
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

    -- the newest staged event, of any item
    select max(last_seen_at) as max_event_at from item_totals

),

final as (

    select
        activity.user_id,
        activity.n_purchases,
        activity.n_returns,
        activity.n_views,
        activity.n_carts,
        activity.n_events,
        activity.n_distinct_items,
        activity.n_baskets,
        activity.n_active_months,
        activity.first_event_at,
        activity.last_event_at,
        datediff(data_end.max_event_at, activity.last_event_at) as recency_days,
        cast(activity.n_baskets as double) / activity.n_active_months as frequency,
        activity.monetary,
        activity.avg_unit_price,
        price_profile.price_level,
        coalesce(category_profile.n_categories, 0) as n_categories,
        category_profile.favourite_category,
        coalesce(top_three_categories.top_categories, json_array()) as top_categories,
        coalesce(recent_sequences.recent_items, json_array()) as recent_items,
        users.country,
        users.attributes
    from activity
    cross join data_end
    left join users
        on users.user_id = activity.user_id
    left join category_profile
        on category_profile.user_id = activity.user_id
    left join top_three_categories
        on top_three_categories.user_id = activity.user_id
    left join price_profile
        on price_profile.user_id = activity.user_id
    left join recent_sequences
        on recent_sequences.user_id = activity.user_id

)

select * from final
