{{
    config(
        materialized='incremental',
        unique_key='source_row_id',
        cluster_by=['source_row_id'],
        post_hook=[create_index(['reject_reason'])]
    )
}}

-- raw events that are kept out of stg_raw__events (quarantine list), one row per
-- raw event, with the first reason that applies. Together with stg_raw__events it
-- accounts for every row of raw_events.
{#-
    Incremental: a raw row's reason depends on the row alone and on whether staging kept
    it, and an incremental build (plan_build: the raw events only grew) neither stages
    an old rejected row nor rejects an old staged one. So a build after new raw rows
    takes only the rows stamped after the last recorded build (last_build_watermark(),
    read by raw_events' loaded_at index) and adds those staging left
    out, looked up by stg_raw__events' unique source_row_id, instead of anti-joining
    every raw row (14.6 s at 10M events, bench/README.md). Any
    other change rebuilds it in full with the rest of the project.
    Clustered on source_row_id, its unique key, so it is updated in place.
#}

with

source as (

    select * from {{ source('raw', 'raw_events') }}
    {% if is_incremental() -%}
        where loaded_at > {{ last_build_watermark() }}
    {%- endif %}

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
