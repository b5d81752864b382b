{{
    config(
        materialized='incremental',
        meta={'tests_read_changed_users': true},
        unique_key=['user_id'],
        cluster_by=['user_id'],
        pre_hook=["{{ drop_touched_users() }}", "{{ create_touched_users('stg_raw__events', 'loaded_at') }}"],
        post_hook=["{{ drop_touched_users() }}"],
    )
}}

-- depends_on: {{ ref('stg_raw__events') }}
-- (the pre-hook's touched users come from its list of the events staged since the last build)

-- one row per user with interactions: when their first and their newest new item were
-- first seen, and their last interaction (what interactions_time_split's view needs per user).
{#-
    Why a table of its own: interactions_time_split labels every interaction by a cut
    that moves with the newest event, every day; whether a user is evaluated there (train
    rows and a new item after the cut) follows from the span of their items' first-seen
    times alone. Kept per user, incrementally, the time split is a view over
    int_interactions and this table, and no build rewrites its 6.6M rows at 10M events
    (35 s of the next-day build, bench/README.md).
    Incremental like interactions_split: the users whose interactions changed since the
    last recorded build are recomputed from all their interactions.
#}

with

interactions as (

    {{ rows_of_touched_users('int_interactions') }}

),

final as (

    select
        user_id,
        min(first_event_at) as first_item_first_seen_at,
        max(first_event_at) as newest_item_first_seen_at,
        max(last_event_at) as last_event_at
    from interactions
    group by user_id

)

select * from final
