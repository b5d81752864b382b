{{
    config(
        post_hook=[create_index(['user_id'], unique=true)]
    )
}}

with

source as (

    select * from {{ source('raw', 'raw_users') }}

),

final as (

    select
        trim(user_id) as user_id,
        nullif(trim(regexp_replace(country, '[[:space:]]+', ' ')), '') as country,
        case when json_valid(attributes) then attributes end as attributes,
        load_id
    from source
    where trim(user_id) <> ''

)

select * from final
