-- every user of int_interactions has a row in int_user_interaction_spans, so every row of
-- the interactions_time_split view has an is_evaluated (spans' columns are not_null): one
-- lookup per user, where a not_null test on the view's column looked up every interaction's
-- user (9 s at 10M events)
with

interaction_users as (

    select distinct interactions.user_id
    from
        {{ rows_of_changed_users('int_interactions', read_whole_with=['int_user_interaction_spans']) }}
            as interactions

),

spans as (

    select user_id from {{ ref('int_user_interaction_spans') }}

)

select interaction_users.user_id
from interaction_users
left join spans
    on spans.user_id = interaction_users.user_id
where spans.user_id is null
