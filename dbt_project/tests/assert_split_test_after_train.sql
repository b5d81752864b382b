-- no test interaction is earlier than any of the same user's train interactions
-- (order by first_event_at, then first_source_row_id), and inside train no
-- validation interaction is earlier than a fit (non-validation) one.

with

split as (

    select split_rows.* from {{ rows_of_changed_users('interactions_split') }} as split_rows

),

bounds as (

    select
        user_id,
        max(case when split = 'train' then item_rank end) as last_train_rank,
        min(case when split = 'test' then item_rank end) as first_test_rank,
        max(case when split = 'train' then first_event_at end) as last_train_at,
        min(case when split = 'test' then first_event_at end) as first_test_at,
        max(case when split = 'train' and is_validation = 0 then item_rank end) as last_fit_rank,
        min(case when is_validation = 1 then item_rank end) as first_validation_rank
    from split
    group by user_id

)

select * from bounds
where first_test_at < last_train_at
    or first_test_rank < last_train_rank
    or first_validation_rank < last_fit_rank
