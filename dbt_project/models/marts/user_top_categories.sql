{{
    config(
        post_hook=[create_index(['user_id', 'category'], unique=true), create_index(['category'])]
    )
}}

-- one row per (user, category) of the user's positive interactions: how much of the
-- user's activity the category holds and its rank among the user's categories.

with

interactions as (

    select * from {{ ref('int_interactions') }}

),

item_categories as (

    select * from {{ ref('int_item_categories') }}

),

per_category as (

    select
        interactions.user_id,
        coalesce(item_categories.category, 'other') as category,
        count(*) as n_items,
        sum(interactions.weight) as weight,
        max(interactions.last_event_at) as last_event_at
    from interactions
    left join item_categories
        on item_categories.item_id = interactions.item_id
    group by interactions.user_id, coalesce(item_categories.category, 'other')

),

user_totals as (

    -- a GROUP BY joined back: MariaDB 10.11 evaluates sum(...) over (partition by ...) row by row
    select
        user_id,
        sum(weight) as total_weight
    from per_category
    group by user_id

),

final as (

    select
        per_category.user_id,
        per_category.category,
        per_category.n_items,
        per_category.weight,
        per_category.weight / user_totals.total_weight as weight_share,
        per_category.last_event_at,
        row_number() over (
            partition by per_category.user_id
            order by
                per_category.weight desc,
                per_category.n_items desc,
                per_category.last_event_at desc,
                per_category.category asc
        ) as category_rank
    from per_category
    inner join user_totals
        on user_totals.user_id = per_category.user_id

)

select * from final
