-- every user with a test row also has train rows

select user_id
from {{ rows_of_changed_users('interactions_split') }} as split_rows  -- noqa: AL05
group by user_id
having sum(split = 'test') > 0
    and sum(split = 'train') = 0
