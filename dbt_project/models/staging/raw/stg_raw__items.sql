-- One row per item: the newest catalog row as of interval_end (first_created_at = when it first appeared).
with

source as (

    select * from {{ source('raw', 'catalog') }}
    where dt <= {{ interval_end_date() }}

),

renamed as (

    select
        event_id as catalog_event_id,
        item_id,
        title,
        description,
        category,
        brand,
        color,
        material,
        cast(price as double precision) as price,
        {{ utc_naive('created_at') }} as published_at
    from source

),

in_interval as (

    select * from renamed
    where published_at < {{ interval_end() }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by item_id order by published_at desc, catalog_event_id desc
        ) as recency_rank,
        min(published_at) over (partition by item_id) as first_created_at
    from in_interval

),

latest as (

    select
        item_id,
        title,
        description,
        category,
        brand,
        color,
        material,
        price,
        first_created_at,
        published_at as updated_at
    from ranked
    where recency_rank = 1

)

select * from latest
