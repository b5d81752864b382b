-- every row of the time-cut split, in one pass over the view: its columns are set, split
-- is 'train' or 'test' and is_repeat_after_cut 0 or 1; every train interaction is before
-- the cut, every test one at or after it, and a repeat after the cut is a train row with
-- an event at or after the cut.
-- One test instead of a not_null or accepted_values test per column: each of those was a
-- pass of its own over the view's 6.6M rows at 10M events (nine passes, 8-12 s of every
-- build's test time; the cut moves every day, so no build can test the changed rows
-- alone). The key's columns keep their not_null and unique_combination tests, and
-- assert_time_split_users_have_spans covers is_evaluated.

select
    user_id,
    item_id,
    split,
    first_event_at,
    last_event_at,
    first_source_row_id,
    weight,
    is_repeat_after_cut,
    cut_at
from {{ ref('interactions_time_split') }}
where user_id is null
    or item_id is null
    or first_event_at is null
    or last_event_at is null
    or first_source_row_id is null
    or weight is null
    or cut_at is null
    or split is null
    or split not in ('train', 'test')
    or is_repeat_after_cut is null
    or is_repeat_after_cut not in (0, 1)
    or (split = 'train' and first_event_at >= cut_at)
    or (split = 'test' and first_event_at < cut_at)
    or (is_repeat_after_cut = 1 and (split <> 'train' or last_event_at < cut_at))
    or (is_repeat_after_cut = 0 and split = 'train' and last_event_at >= cut_at)
