{{
    config(
        materialized='incremental',
        unique_key=['user_id', 'item_id'],
        cluster_by=['user_id', 'item_id'],
        pre_hook=["{{ drop_touched_pairs() }}", "{{ create_touched_pairs() }}"],
        post_hook=["{{ drop_touched_pairs() }}"],
    )
}}

-- one row per (user, product) the user bought: in how many baskets (the basket id, or
-- the calendar day when there is none). item_features counts a product's buyers and
-- those who bought it again from here.
{#-
    Not a sum: a basket seen again on a later day is still one basket. Incremental per
    pair, as int_interactions: a build after new events recomputes the pairs they touch
    from all of their staged events (read by stg_raw__events' clustered key) and updates
    those rows in place.
#}

with

events as (

    select stg_raw__events.*
    from {{ ref('stg_raw__events') }} as stg_raw__events
    {% if is_incremental() -%}
        inner join {{ touched_pairs_relation() }} as touched_pairs
            on touched_pairs.user_id = stg_raw__events.user_id
            and touched_pairs.item_id = stg_raw__events.item_id
    {%- endif %}
    where stg_raw__events.is_product = 1
        and stg_raw__events.is_return = 0
        and stg_raw__events.event_type = 'purchase'

),

final as (

    select
        user_id,
        item_id,
        count(distinct coalesce(basket_id, date_format(event_at, '%Y-%m-%d'))) as n_baskets,
        max(loaded_at) as last_loaded_at
    from events
    group by user_id, item_id

)

select * from final
