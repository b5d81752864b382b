{{
    config(
        cluster_by=['user_id', 'item_id'],
    )
}}

{#-
    Global time-cut split (the production-style backtest of the evaluation protocol):
    one row per (user_id, item_id) of int_interactions; interactions first seen before
    the cut are 'train', the others 'test'. The cut is the var time_cut_at, or when
    that is '' midnight of the last event's day minus time_cut_days (30: "test the
    last month"; Online Retail's last event is on 2011-12-09, so its cut is
    2011-11-09 as the protocol asks).

    Shops also sell again what a shopper bought before, so a train row whose item the
    user interacted with again at or after the cut is flagged is_repeat_after_cut:
    the backtest scores it once with those repeats counted as test items and once
    with already-bought items excluded. A user is evaluated (is_evaluated) when they
    have train rows and a new item after the cut.

    Clustered on (user_id, item_id) (macros/create_table_as.sql), which is also its
    unique key: int_interactions is read in that order, so the rows go in sorted and
    no unique index is built afterwards (at 10M events 46 s instead of 48 + 23 s).
    No index on split (two values) or item_id (nothing reads it; 7.7 s at 10M events),
    as in interactions_split.
    The cut is computed first, by its own query, and inlined as a literal: joined
    in as a one-row CTE, MariaDB 10.11 misjudged it and this model took 100 s on
    Online Retail instead of 2.
#}
{%- set time_cut_at = var('time_cut_at') | string -%}
{%- if time_cut_at | length == 0 and execute -%}
    {%- set cut_query -%}
        select date_format(
            date_sub(cast(max(last_event_at) as date), interval {{ var('time_cut_days') | int }} day),
            '%Y-%m-%d %H:%i:%s'
        )
        from {{ ref('int_interactions') }}
    {%- endset -%}
    {%- set time_cut_at = run_query(cut_query).columns[0].values()[0] or '9999-12-31 00:00:00' -%}
{%- endif %}

with

interactions as (

    select * from {{ ref('int_interactions') }}

),

labelled as (

    select
        user_id,
        item_id,
        case
            when first_event_at < cast({{ sql_string_literal(time_cut_at) }} as datetime) then 'train'
            else 'test'
        end as split,
        cast(
            first_event_at < cast({{ sql_string_literal(time_cut_at) }} as datetime)
            and last_event_at >= cast({{ sql_string_literal(time_cut_at) }} as datetime)
            as unsigned
        ) as is_repeat_after_cut,
        first_event_at,
        last_event_at,
        first_source_row_id,
        weight,
        cast({{ sql_string_literal(time_cut_at) }} as datetime) as cut_at
    from interactions

),

user_sides as (

    -- a GROUP BY joined back, not max(...) over (partition by user_id): MariaDB
    -- 10.11 evaluates that window aggregate row by row (81 s against 0.8 s here)
    select
        user_id,
        cast(max(split = 'train') and max(split = 'test') as unsigned) as is_evaluated
    from labelled
    group by user_id

),

final as (

    select
        labelled.user_id,
        labelled.item_id,
        labelled.split,
        user_sides.is_evaluated,
        labelled.is_repeat_after_cut,
        labelled.first_event_at,
        labelled.last_event_at,
        labelled.first_source_row_id,
        labelled.weight,
        labelled.cut_at
    from labelled
    inner join user_sides
        on user_sides.user_id = labelled.user_id

)

select * from final
