{{
    config(
        post_hook=[create_index(['item_id'], unique=true)]
    )
}}

with

source as (

    select * from {{ source('raw', 'raw_items') }}

),

renamed as (

    select
        trim(item_id) as item_id,
        nullif(trim(regexp_replace(title, '[[:space:]]+', ' ')), '') as title,
        nullif(lower(trim(regexp_replace(category, '[[:space:]]+', ' '))), '') as category,
        case when price > 0 then price end as price,
        load_id
    from source

),

final as (

    select
        item_id,
        title,
        category,
        price,
        cast({{ is_product_item('item_id') }} as unsigned) as is_product,
        load_id
    from renamed
    where item_id <> ''

)

select * from final
