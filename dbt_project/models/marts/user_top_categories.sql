{{
    config(
        materialized='incremental',
        unique_key='user_id',
        pre_hook=['{{ drop_touched_users() }}', '{{ create_category_touched_users() }}'],
        post_hook=[
            '{{ drop_touched_users() }}',
            '{{ drop_categories_seen() }}',
            '{{ record_categories_seen() }}',
            create_index(['user_id', 'category'], unique=true),
            create_index(['category']),
        ]
    )
}}

-- depends_on: {{ ref('stg_raw__events') }}
-- (the pre-hook's touched users come from its list of the events staged since the last build)

-- one row per (user, category) of the user's positive interactions: how much of the
-- user's activity the category holds and its rank among the user's categories.
{#-
    Built to grow linearly (issue 19): the one wide GROUP BY, (user, category) over
    every interaction, groups on a category *number* instead of the category text, so
    its in-memory temporary table holds rows of about 300 bytes instead of 800 (MariaDB
    keeps VARCHARs at full width there) and does not spill to disk at 10M events; the
    text is joined back to the few result rows at the end. The user's total weight is a
    window over the user's few category rows, in the same sort as the rank. Before, the
    grouped rows were referenced twice (the ranks and a GROUP BY user_id joined back),
    so MariaDB built them twice and wrote several temporary tables to disk: 34.9 times
    slower from 1M to 10M events (bench/README.md).

    Category spellings the column's collation equates (case, accents) are one category,
    as before; each is now shown under one spelling for every user (the first in binary
    order), where the GROUP BY on the text showed the spelling of each user's first item.

    Incremental: a user's rows depend on their own interactions and their items'
    categories, so a build after new events redoes the users with changed interactions
    and those a category change reaches (macros/category_changes.sql) and replaces
    their rows (delete + insert on user_id, through the (user_id, category) index),
    where a full build reads every interaction (31.2 s at 10M events, bench/README.md).
#}

with

interactions as (

    {{ rows_of_touched_users('int_interactions') }}

),

item_categories as (

    select * from {{ ref('int_item_categories') }}

),

spellings as (

    -- every spelling once: grouped on the bytes, so 'Books' and 'books' stay apart here
    select min(coalesce(category, 'other')) as category
    from item_categories
    group by cast(coalesce(category, 'other') as binary)
    union all
    select 'other' as category

),

numbered_spellings as (

    -- category_no follows the column's collation, so ordering by it is ordering by the
    -- text (the rank's last tie-break), and equal spellings share it
    select
        category,
        dense_rank() over (order by category) as category_no,
        row_number() over (partition by category order by cast(category as binary)) as spelling_order
    from spellings

),

categories as (

    select
        category,
        category_no
    from numbered_spellings
    where spelling_order = 1

),

item_category_numbers as (

    select
        item_categories.item_id,
        categories.category_no
    from item_categories
    inner join categories
        on categories.category = coalesce(item_categories.category, 'other')

),

per_category as (

    select
        interactions.user_id,
        -- items missing from the catalogue are 'other', as in int_item_categories (a
        -- scalar subquery, evaluated once: a cross join made MariaDB read the
        -- interactions out of their (user_id, item_id) order)
        coalesce(
            item_category_numbers.category_no,
            (
                select categories.category_no
                from categories
                where categories.category = 'other'
            )
        ) as category_no,
        count(*) as n_items,
        sum(interactions.weight) as weight,
        max(interactions.last_event_at) as last_event_at
    from interactions
    left join item_category_numbers
        on item_category_numbers.item_id = interactions.item_id
    group by interactions.user_id, category_no

),

ranked as (

    select
        user_id,
        category_no,
        n_items,
        weight,
        weight / sum(weight) over (partition by user_id) as weight_share,
        last_event_at,
        row_number() over (
            partition by user_id
            order by
                weight desc,
                n_items desc,
                last_event_at desc,
                category_no asc
        ) as category_rank
    from per_category

),

final as (

    select
        ranked.user_id,
        categories.category,
        ranked.n_items,
        ranked.weight,
        ranked.weight_share,
        ranked.last_event_at,
        ranked.category_rank
    from ranked
    inner join categories
        on categories.category_no = ranked.category_no

)

select * from final
