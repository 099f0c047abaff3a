with

source as (

    select * from {{ source('raw', 'engagements') }}
    where dt <= {{ interval_end_date() }}

),

renamed as (

    select
        event_id as engagement_id,
        request_id,
        item_id,
        {{ utc_naive('ts') }} as engaged_at,
        type as engagement_type
    from source

),

in_interval as (

    select * from renamed
    where engaged_at < {{ interval_end() }}

)

select * from in_interval
