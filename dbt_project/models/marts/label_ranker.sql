-- One row per impression: retrieval-time scores and the graded label from engagements on that
-- (request, item) within the attribution window: 3 purchase, 2 add_to_cart, 1 click, 0 none (highest wins).
with

impressions as (

    select * from {{ ref('stg_raw__impressions') }}

),

requests as (

    select * from {{ ref('stg_raw__requests') }}

),

attributed as (

    select * from {{ ref('int_attributed_engagements') }}

),

grades as (

    select request_id, item_id, max(grade) as label
    from attributed
    group by request_id, item_id

),

final as (

    select
        impressions.request_id,
        {{ to_utc('impressions.impressed_at') }} as event_timestamp,
        requests.query_norm,
        impressions.item_id,
        impressions.position,
        impressions.strategy,
        impressions.retrieval_score,
        impressions.lexical_score,
        impressions.semantic_score,
        impressions.memory_score,
        impressions.popularity_score,
        impressions.position_randomized,
        cast(coalesce(grades.label, 0) as integer) as label
    from impressions
    inner join requests on impressions.request_id = requests.request_id
    left join grades
        on impressions.request_id = grades.request_id
        and impressions.item_id = grades.item_id

)

select * from final
order by event_timestamp, request_id, position
