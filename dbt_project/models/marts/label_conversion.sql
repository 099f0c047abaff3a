-- One row per click (the first click on an impressed item of a request): did it convert, observed as of
-- interval_end? Delayed feedback: a click younger than the attribution window may still convert later, so
-- `matured` = 1 only once elapsed_hours >= attribution_window_days * 24. Add-to-carts and purchases count
-- when on the same (request, item), at or after the click, within the window and before interval_end.
with

clicks as (

    select * from {{ ref('int_attributed_engagements') }}
    where engagement_type = 'click'

),

engagements as (

    select * from {{ ref('stg_raw__engagements') }}

),

requests as (

    select * from {{ ref('stg_raw__requests') }}

),

followups as (

    select
        clicks.request_id,
        clicks.item_id,
        min(case when engagements.engagement_type = 'add_to_cart' then engagements.engaged_at end) as first_atc_at,
        min(case when engagements.engagement_type = 'purchase' then engagements.engaged_at end) as first_purchase_at
    from clicks
    inner join engagements
        on clicks.request_id = engagements.request_id
        and clicks.item_id = engagements.item_id
    where engagements.engaged_at >= clicks.engaged_at
      and engagements.engaged_at < clicks.engaged_at + {{ attribution_window() }}
    group by clicks.request_id, clicks.item_id

),

final as (

    select
        clicks.request_id,
        clicks.item_id,
        requests.query_norm,
        {{ to_utc('clicks.engaged_at') }} as event_timestamp,
        cast(case when followups.first_atc_at is not null then 1 else 0 end as integer) as has_atc,
        cast({{ hours_between('clicks.engaged_at', interval_end()) }} as double precision) as elapsed_hours,
        cast(case when followups.first_purchase_at is not null then 1 else 0 end as integer) as converted_observed,
        cast({{ hours_between('clicks.engaged_at', 'followups.first_purchase_at') }} as double precision)
            as purchase_delay_hours,
        cast(
            case when {{ hours_between('clicks.engaged_at', interval_end()) }}
                      >= {{ var('attribution_window_days') | int }} * 24 then 1 else 0 end
        as integer) as matured
    from clicks
    inner join requests on clicks.request_id = requests.request_id
    left join followups
        on clicks.request_id = followups.request_id
        and clicks.item_id = followups.item_id

)

select * from final
order by event_timestamp, request_id, item_id
