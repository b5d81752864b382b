-- every raw event is either staged or rejected, never both, never neither

with

raw_events as (

    select source_row_id from {{ source('raw', 'raw_events') }}

),

staged as (

    select source_row_id from {{ ref('stg_raw__events') }}

),

rejected as (

    select source_row_id from {{ ref('stg_raw__rejected_events') }}

),

counts as (

    select
        (select count(*) from raw_events) as n_raw,
        (select count(*) from staged) as n_staged,
        (select count(*) from rejected) as n_rejected,
        (
            select count(*)
            from staged
            inner join rejected
                on rejected.source_row_id = staged.source_row_id
        ) as n_both

)

select * from counts
where n_raw <> n_staged + n_rejected
    or n_both > 0
