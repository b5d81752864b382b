{{
    config(
        post_hook=[
            create_index(['user_id', 'item_id']),
            create_index(['item_id']),
        ]
    )
}}

-- one row per (user, item) with at least one positive event on a product by a
-- known user; fee / adjustment lines, returns, non-positive quantities and prices
-- are left out.

with

events as (

    select * from {{ ref('stg_raw__events') }}

),

event_weights as (

    select * from {{ ref('event_weights') }}

),

positive_events as (

    select
        events.user_id,
        events.item_id,
        events.source_row_id,
        events.event_at,
        events.quantity,
        event_weights.weight,
        min(events.event_at) over (
            partition by events.user_id, events.item_id
        ) as first_event_at
    from events
    inner join event_weights
        on event_weights.event_type = events.event_type
    where event_weights.is_positive = 1
        and events.is_product = 1
        and events.has_known_user = 1
        and events.is_return = 0
        and (events.quantity is null or events.quantity > 0)
        and (events.price is null or events.price > 0)

),

final as (

    select
        user_id,
        item_id,
        min(first_event_at) as first_event_at,
        min(case when event_at = first_event_at then source_row_id end) as first_source_row_id,
        max(event_at) as last_event_at,
        count(*) as n_events,
        sum(weight) as weight,
        sum(quantity) as quantity_total
    from positive_events
    group by user_id, item_id

)

select * from final
