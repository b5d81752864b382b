{{
    config(
        materialized='incremental',
        meta={'tests_read_changed_users': true},
        unique_key='source_row_id',
        cluster_by=['user_id', 'item_id', 'source_row_id'],
        pre_hook=[
            '{{ drop_new_raw_events() }}',
            '{{ create_new_raw_events() }}',
        ],
        post_hook=[
            '{{ create_events_since_last_build() }}',
            '{{ forget_events_of_last_build() }}',
            '{{ add_events_since_last_build() }}',
            '{{ analyze_events_since_last_build() }}',
            '{{ drop_new_raw_events() }}',
            create_index(['source_row_id'], unique=true),
        ]
    )
}}

{#-
    Clustered on (user_id, item_id, source_row_id) (macros/create_table_as.sql): the
    models that aggregate events per user or per (user, item) read them in that order,
    without temporary tables.

    Incremental: a build after the raw events only grew (see
    recsys_pipeline.features.dbt.plan_build) reads just the raw rows stamped after the
    last recorded build (by raw_events' loaded_at index); the loader keeps the first
    `loaded_at` of unchanged rows.
    Those rows are cleaned once into a session table (create_new_raw_events(), keyed in
    this table's order) that the query reads: merged into
    the query, MariaDB tested "not a copy of a staged event" against every raw row before
    the `loaded_at` filter -- 10M lookups, 297 s for 100k new rows at 10M events.
    Anything else -- changed rules, changed or removed raw rows -- is built with
    --full-refresh, so incremental and full builds give the same table. The post-hooks
    also keep the list of staged events loaded since the last recorded build that the
    incremental models downstream read (macros/events_since_last_build.sql).
#}

with

valid as (

    {{ staged_raw_events() }}

),

later_copies as (

    -- every copy of an event after its lowest source_row_id among the rows read here
    -- (macros/staged_events.sql); stg_raw__rejected_events lists them
    select source_row_id from {{ ref('stg_raw__event_copies') }}

),

item_kinds as (

    select * from {{ ref('stg_item_kinds') }}

),

kept as (

    -- first copies only: the few later copies are looked up in their table's primary key
    select valid.*
    from valid
    where valid.source_row_id not in (select later_copies.source_row_id from later_copies)
        {% if is_incremental() -%}
            -- and not a copy of an event staged by an earlier build
            and not exists (
                select 1
                from {{ this }} as staged
                where staged.user_id = valid.user_id
                    and staged.item_id = valid.item_id
                    and staged.event_type = valid.event_type
                    and staged.event_value <=> valid.event_value
                    and staged.quantity <=> valid.quantity
                    and staged.price <=> valid.price
                    and staged.event_at = valid.event_at
                    and staged.basket_id <=> valid.basket_id
                    and staged.source_row_id < valid.source_row_id
            )
        {%- endif %}

),

final as (

    select
        kept.source_row_id,
        kept.user_id,
        kept.item_id,
        kept.event_type,
        kept.event_value,
        kept.quantity,
        kept.price,
        kept.basket_id,
        kept.event_at,
        item_kinds.is_product,
        item_kinds.non_product_kind,
        cast(
            kept.event_type = 'return'
            or coalesce(kept.quantity < 0, false)
            as unsigned
        ) as is_return,
        kept.load_id,
        kept.loaded_at
    from kept
    inner join item_kinds
        on item_kinds.item_id = kept.item_id

)

select * from final
