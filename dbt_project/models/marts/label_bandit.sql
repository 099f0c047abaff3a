-- One row per decision: the context the bandit saw, the primary strategy, its logged propensity and the
-- reward observed within the attribution window (click 1 + add_to_cart 1 + purchase 2 per impressed item,
-- summed over the request's items, capped at var('reward_cap') = 4).
with

decisions as (

    select * from {{ ref('stg_raw__decisions') }}

),

requests as (

    select * from {{ ref('stg_raw__requests') }}

),

attributed as (

    select * from {{ ref('int_attributed_engagements') }}

),

request_rewards as (

    select
        request_id,
        least(sum(reward_points), {{ var('reward_cap') }}) as reward
    from attributed
    group by request_id

),

final as (

    select
        decisions.request_id,
        {{ to_utc('requests.requested_at') }} as event_timestamp,
        requests.query_norm,
        requests.device,
        requests.hour,
        decisions.primary_strategy as strategy,
        decisions.propensity,
        cast(coalesce(request_rewards.reward, 0) as integer) as reward,
        decisions.policy_version
    from decisions
    inner join requests on decisions.request_id = requests.request_id
    left join request_rewards on decisions.request_id = request_rewards.request_id

)

select * from final
order by event_timestamp, request_id
