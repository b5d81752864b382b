-- every user with a test row also has train rows

select user_id
from {{ ref('interactions_split') }}
group by user_id
having sum(split = 'test') > 0
    and sum(split = 'train') = 0
