{{
    config(
        post_hook=[
            create_index(['source_row_id'], unique=true),
            create_index(['user_id', 'item_id']),
            create_index(['item_id']),
        ]
    )
}}

with

source as (

    select * from {{ source('raw', 'raw_events') }}

),

users as (

    select * from {{ ref('stg_raw__users') }}

),

cleaned as (

    select
        source_row_id,
        nullif(trim(user_id), '') as user_id,
        nullif(trim(item_id), '') as item_id,
        nullif(lower(trim(event_type)), '') as event_type,
        event_value,
        quantity,
        price,
        nullif(trim(basket_id), '') as basket_id,
        {{ parse_event_time('event_time') }} as event_at,
        load_id
    from source

),

valid as (

    select * from cleaned
    where user_id is not null
        and item_id is not null
        and event_type is not null
        and event_at is not null

),

deduplicated as (

    -- exact duplicates (same user, item, type, value, quantity, price, time, basket)
    -- keep the lowest source_row_id; the others are listed in stg_raw__rejected_events
    select
        *,
        row_number() over (
            partition by
                user_id, item_id, event_type, event_value,
                quantity, price, event_at, basket_id
            order by source_row_id
        ) as duplicate_number
    from valid

),

distinct_items as (

    select distinct item_id from deduplicated where duplicate_number = 1

),

item_flags as (

    select
        item_id,
        {{ is_product_item('item_id') }} as is_product,
        {{ non_product_kind('item_id') }} as non_product_kind
    from distinct_items

),

final as (

    select
        deduplicated.source_row_id,
        deduplicated.user_id,
        deduplicated.item_id,
        deduplicated.event_type,
        deduplicated.event_value,
        deduplicated.quantity,
        deduplicated.price,
        deduplicated.basket_id,
        deduplicated.event_at,
        cast(item_flags.is_product as unsigned) as is_product,
        item_flags.non_product_kind,
        cast(
            deduplicated.event_type = 'return'
            or coalesce(deduplicated.quantity < 0, false)
        as unsigned) as is_return,
        cast(users.user_id is not null as unsigned) as has_known_user,
        deduplicated.load_id
    from deduplicated
    inner join item_flags
        on item_flags.item_id = deduplicated.item_id
    left join users
        on users.user_id = deduplicated.user_id
    where deduplicated.duplicate_number = 1

)

select * from final
