-- every train interaction of the time-cut split is before the cut, every test one at or after it

select user_id, item_id, split, first_event_at, cut_at
from {{ ref('interactions_time_split') }}
where (split = 'train' and first_event_at >= cut_at)
    or (split = 'test' and first_event_at < cut_at)
