{{
    config(
        post_hook=[create_index(['source_row_id'], unique=true), create_index(['reject_reason'])]
    )
}}

-- raw events that are kept out of stg_raw__events (quarantine list), one row per
-- raw event, with the first reason that applies. Together with stg_raw__events it
-- accounts for every row of raw_events. A full table on every build (an anti-join
-- on the primary key), so it always matches the current raw data.

with

source as (

    select * from {{ source('raw', 'raw_events') }}

),

staged as (

    select source_row_id from {{ ref('stg_raw__events') }}

),

checked as (

    select
        source_row_id,
        user_id,
        item_id,
        event_type,
        event_value,
        quantity,
        price,
        event_time,
        basket_id,
        event_at,
        load_id,
        loaded_at
    from source

),

final as (

    select
        checked.source_row_id,
        checked.user_id,
        checked.item_id,
        checked.event_type,
        checked.event_value,
        checked.quantity,
        checked.price,
        checked.event_time,
        checked.basket_id,
        checked.load_id,
        checked.loaded_at,
        case
            when nullif(trim(checked.user_id), '') is null then 'missing_user_id'
            when nullif(trim(checked.item_id), '') is null then 'missing_item_id'
            when nullif(trim(checked.event_type), '') is null then 'missing_event_type'
            when checked.event_at is null then 'unparseable_event_time'
            when checked.event_at not between {{ plausible_event_time_range('checked.loaded_at') }}
                then 'implausible_event_time'
            else 'duplicate_event'
        end as reject_reason
    from checked
    left join staged
        on staged.source_row_id = checked.source_row_id
    where staged.source_row_id is null

)

select * from final
