{{
    config(
        materialized='incremental',
        unique_key=['item_id', 'price'],
        cluster_by=['item_id', 'price'],
    )
}}

-- one row per (product, unit price) of its purchases with a positive price: how many
-- purchase lines were at that price. item_features takes the most common as the
-- product's price when the catalogue has none.
{#-
    Counts, so a build after new events adds the new purchase lines' counts to the
    counted ones (the watermark and the all-or-nothing insert as in int_item_event_totals)
    instead of grouping every staged purchase again.
#}

with

{% if is_incremental() -%}
    new_events as (

        -- the staged events loaded after those counted here, from their list (events_since())
        {{ events_since(incremental_watermark('last_loaded_at')) }}

    ),
{%- endif %}

events as (

    select staged.*
    from {{ ref('stg_raw__events') }} as staged
    {% if is_incremental() -%}
        inner join new_events
            on new_events.user_id = staged.user_id
            and new_events.item_id = staged.item_id
            and new_events.source_row_id = staged.source_row_id
    {%- endif %}

),

purchase_lines as (

    select
        item_id,
        price,
        loaded_at
    from events
    where is_product = 1
        and is_return = 0
        and event_type = 'purchase'
        and price > 0

),

new_lines as (

    select
        item_id,
        price,
        count(*) as n_lines,
        max(loaded_at) as last_loaded_at
    from purchase_lines
    group by item_id, price

),

final as (

    {% if is_incremental() -%}
        select
            new_lines.item_id,
            new_lines.price,
            new_lines.n_lines + coalesce(counted.n_lines, 0) as n_lines,
            new_lines.last_loaded_at
        from new_lines
        left join {{ this }} as counted
            on counted.item_id = new_lines.item_id
            and counted.price = new_lines.price
    {%- else -%}
        select * from new_lines
    {%- endif %}

)

select * from final
