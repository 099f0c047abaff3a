with

source as (

    select * from {{ source('raw', 'requests') }}
    where dt <= {{ interval_end_date() }}

),

renamed as (

    select
        request_id,
        {{ utc_naive('ts') }} as requested_at,
        user_id,
        session_id,
        query,
        {{ normalize_query('query') }} as query_norm,
        device,
        locale,
        cast(hour as integer) as hour
    from source

),

in_interval as (

    select * from renamed
    where requested_at < {{ interval_end() }}

)

select * from in_interval
