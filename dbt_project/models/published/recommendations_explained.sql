{{ config(materialized='view') }}

-- the current recommendations, joined to what makes each one plausible (or not)

with

recommendations as (

    select * from {{ source('published', 'recommendations') }}

),

item_features as (

    select * from {{ ref('item_features') }}

),

user_categories as (

    select * from {{ ref('user_top_categories') }}

),

user_features as (

    select * from {{ ref('user_features') }}

),

final as (

    select
        recommendations.user_id,
        recommendations.`rank`,
        recommendations.item_id,
        recommendations.score,
        recommendations.model_version,
        recommendations.generated_at,
        item_features.title,
        item_features.category,
        item_features.price,
        item_features.popularity_rank,
        user_categories.category_rank as user_category_rank,
        user_categories.weight_share as user_category_share,
        user_features.favourite_category,
        case
            when user_categories.category_rank = 1 then 'in your favourite category'
            when user_categories.category_rank is not null
                then concat('in a category you buy (#', user_categories.category_rank, ')')
            when item_features.popularity_rank <= 100
                then concat('popular item (#', item_features.popularity_rank, ' overall)')
            else 'new category for you'
        end as reason
    from recommendations
    left join item_features
        on item_features.item_id = recommendations.item_id
    left join user_categories
        on user_categories.user_id = recommendations.user_id
        and user_categories.category = item_features.category
    left join user_features
        on user_features.user_id = recommendations.user_id

)

select * from final
