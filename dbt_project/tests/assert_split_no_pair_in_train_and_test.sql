-- no (user, item) pair is both in train and in test

select
    user_id,
    item_id
from {{ ref('interactions_split') }}
group by user_id, item_id
having sum(split = 'train') > 0
    and sum(split = 'test') > 0
