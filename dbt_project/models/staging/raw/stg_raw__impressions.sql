with

source as (

    select * from {{ source('raw', 'impressions') }}
    where dt <= {{ interval_end_date() }}

),

renamed as (

    select
        event_id as impression_id,
        request_id,
        {{ utc_naive('ts') }} as impressed_at,
        item_id,
        cast(position as integer) as position,
        strategy,
        cast(retrieval_score as double precision) as retrieval_score,
        cast(lexical_score as double precision) as lexical_score,
        cast(semantic_score as double precision) as semantic_score,
        cast(memory_score as double precision) as memory_score,
        cast(popularity_score as double precision) as popularity_score,
        cast(rank_score as double precision) as rank_score,
        coalesce(cast(position_randomized as boolean), false) as position_randomized
    from source

),

in_interval as (

    select * from renamed
    where impressed_at < {{ interval_end() }}

)

select * from in_interval
