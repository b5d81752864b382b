-- every train interaction of the time-cut split is before the cut, every test one at or
-- after it, and a repeat after the cut is a train row with an event at or after the cut

select
    user_id,
    item_id,
    split,
    first_event_at,
    last_event_at,
    is_repeat_after_cut,
    cut_at
from {{ ref('interactions_time_split') }}
where (split = 'train' and first_event_at >= cut_at)
    or (split = 'test' and first_event_at < cut_at)
    or (is_repeat_after_cut = 1 and (split <> 'train' or last_event_at < cut_at))
    or (is_repeat_after_cut = 0 and split = 'train' and last_event_at >= cut_at)
