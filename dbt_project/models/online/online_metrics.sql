-- what shoppers did with the lists each model served: per dataset, model version and day,
-- the lists and items shown, and the shown items the same shopper clicked, carted or bought
-- within 24 hours of seeing them

with

served_lists as (

    select * from {{ source('serving', 'served_lists') }}

),

served_items as (

    select * from {{ source('serving', 'served_items') }}

),

online_events as (

    select * from {{ source('serving', 'online_events') }}

),

shown as (

    select
        served_lists.request_id,
        served_lists.dataset,
        served_lists.model_version,
        served_lists.user_id,
        served_lists.served_at,
        served_items.item_id,
        cast(served_lists.served_at as date) as served_on
    from served_lists
    inner join served_items
        on served_items.request_id = served_lists.request_id

),

outcomes as (

    select
        shown.request_id,
        shown.item_id,
        max(online_events.event_type in ('view', 'click')) as clicked,
        max(online_events.event_type in ('cart', 'add_to_cart')) as carted,
        max(online_events.event_type = 'purchase') as purchased
    from shown
    inner join online_events
        on
        online_events.dataset = shown.dataset
        and online_events.user_id = shown.user_id
        and online_events.item_id = shown.item_id
        and online_events.event_at >= shown.served_at
        and online_events.event_at < shown.served_at + interval 24 hour
    group by shown.request_id, shown.item_id

),

final as (

    select
        shown.dataset,
        shown.model_version,
        shown.served_on,
        count(distinct shown.request_id) as lists_served,
        count(*) as items_shown,
        coalesce(sum(outcomes.clicked), 0) as items_clicked,
        coalesce(sum(outcomes.carted), 0) as items_carted,
        coalesce(sum(outcomes.purchased), 0) as items_purchased,
        coalesce(sum(outcomes.clicked), 0) / cast(count(*) as double) as click_rate,
        coalesce(sum(outcomes.carted), 0) / cast(count(*) as double) as cart_rate,
        coalesce(sum(outcomes.purchased), 0) / cast(count(*) as double) as purchase_rate
    from shown
    left join outcomes
        on
        outcomes.request_id = shown.request_id
        and outcomes.item_id = shown.item_id
    group by shown.dataset, shown.model_version, shown.served_on

)

select * from final
