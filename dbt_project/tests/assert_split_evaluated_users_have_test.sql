-- users with >= min_user_items_for_eval distinct items have at least one test item
-- and are flagged is_evaluated; users with fewer have none

select user_id
from {{ rows_of_changed_users('interactions_split') }} as split_rows  -- noqa: AL05
group by user_id
having
    (
        max(n_user_items) >= greatest({{ var('min_user_items_for_eval') | int }}, 2)
        and (sum(split = 'test') = 0 or min(is_evaluated) = 0)
    )
    or (
        max(n_user_items) < greatest({{ var('min_user_items_for_eval') | int }}, 2)
        and (sum(split = 'test') > 0 or max(is_evaluated) = 1)
    )
