{{
    config(
        post_hook=[create_index(['item_id'], unique=true), create_index(['category'])]
    )
}}

-- one row per catalogue item with its category: the catalogue's own (the first of
-- '|'-separated genres) when it has one, else derived from the title by the rules of
-- seed category_keywords (lowest priority wins), else 'other'.

with

items as (

    select * from {{ ref('stg_raw__items') }}

),

keywords as (

    select * from {{ ref('category_keywords') }}

),

keyword_matches as (

    select
        items.item_id,
        keywords.category,
        row_number() over (
            partition by items.item_id
            order by keywords.priority
        ) as match_order
    from items
    inner join keywords
        on lower(items.title) regexp keywords.title_pattern
    where items.category is null
        and items.title is not null

),

final as (

    select
        items.item_id,
        -- varchar, not the longtext the expression would give: MariaDB can only index a
        -- longtext by a hash that lookups do not use, and the marts join on category
        cast(coalesce(
            nullif(trim(substring_index(items.category, '|', 1)), ''),
            keyword_matches.category,
            'other'
        ) as char(128)) as category,
        case
            when nullif(trim(substring_index(items.category, '|', 1)), '') is not null then 'catalogue'
            when keyword_matches.category is not null then 'title_keywords'
            else 'none'
        end as category_source
    from items
    left join keyword_matches
        on keyword_matches.item_id = items.item_id
        and keyword_matches.match_order = 1

)

select * from final
