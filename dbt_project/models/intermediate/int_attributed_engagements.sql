-- One row per (request, item, engagement type): the first such engagement on an impressed item within
-- the attribution window after the impression. Engagements on items the request never showed, before the
-- impression, or after the window are not attributed. Only events before interval_end exist upstream.
with

impressions as (

    select * from {{ ref('stg_raw__impressions') }}

),

engagements as (

    select * from {{ ref('stg_raw__engagements') }}

),

attributed as (

    select
        engagements.request_id,
        engagements.item_id,
        engagements.engagement_type,
        engagements.engaged_at,
        impressions.impressed_at
    from engagements
    inner join impressions
        on engagements.request_id = impressions.request_id
        and engagements.item_id = impressions.item_id
    where engagements.engaged_at >= impressions.impressed_at
      and engagements.engaged_at < impressions.impressed_at + {{ attribution_window() }}

),

first_per_type as (

    select
        request_id,
        item_id,
        engagement_type,
        min(engaged_at) as engaged_at,
        min(impressed_at) as impressed_at
    from attributed
    group by request_id, item_id, engagement_type

),

scored as (

    select
        *,
        case engagement_type when 'purchase' then 2 else 1 end as reward_points,
        case engagement_type when 'purchase' then 3 when 'add_to_cart' then 2 else 1 end as grade
    from first_per_type

)

select * from scored
