{{
    config(
        materialized='incremental',
        unique_key='source_row_id',
        post_hook=[
            create_index(['source_row_id'], unique=true),
            create_index(['user_id', 'item_id']),
        ]
    )
}}

{#-
    Incremental: a build after the raw events only grew (see
    recsys_pipeline.features.dbt.plan_build) reads just the raw rows stamped after the
    newest `loaded_at` here; the loader keeps the first `loaded_at` of unchanged rows.
    Anything else -- changed rules, changed or removed raw rows -- is built with
    --full-refresh, so incremental and full builds give the same table.
#}

with

source as (

    select * from {{ source('raw', 'raw_events') }}
    {% if is_incremental() -%}
        where loaded_at > {{ incremental_watermark('loaded_at') }}
    {%- endif %}

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
        cast(event_at as datetime) as event_at,
        load_id,
        loaded_at
    from source

),

valid as (

    select * from cleaned
    where user_id is not null
        and item_id is not null
        and event_type is not null
        and event_at is not null
        and event_at between {{ plausible_event_time_range() }}

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

first_copies as (

    select * from deduplicated
    where duplicate_number = 1
        {% if is_incremental() -%}
            -- and not a copy of an event staged by an earlier build
            and not exists (
                select 1
                from {{ this }} as staged
                where staged.user_id = deduplicated.user_id
                    and staged.item_id = deduplicated.item_id
                    and staged.event_type = deduplicated.event_type
                    and staged.event_value <=> deduplicated.event_value
                    and staged.quantity <=> deduplicated.quantity
                    and staged.price <=> deduplicated.price
                    and staged.event_at = deduplicated.event_at
                    and staged.basket_id <=> deduplicated.basket_id
                    and staged.source_row_id < deduplicated.source_row_id
            )
        {%- endif %}

),

item_kinds as (

    select * from {{ ref('stg_item_kinds') }}

),

final as (

    select
        first_copies.source_row_id,
        first_copies.user_id,
        first_copies.item_id,
        first_copies.event_type,
        first_copies.event_value,
        first_copies.quantity,
        first_copies.price,
        first_copies.basket_id,
        first_copies.event_at,
        item_kinds.is_product,
        item_kinds.non_product_kind,
        cast(
            first_copies.event_type = 'return'
            or coalesce(first_copies.quantity < 0, false)
            as unsigned
        ) as is_return,
        first_copies.load_id,
        first_copies.loaded_at
    from first_copies
    inner join item_kinds
        on item_kinds.item_id = first_copies.item_id

)

select * from final
