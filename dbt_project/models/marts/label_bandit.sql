-- One row per decision: the context the bandit saw, the retrieval plan it chose (strategies and their candidate
-- budgets; the first strategy is the primary), the logged propensity of that whole plan, and the reward observed
-- within the attribution window (click 1 + add_to_cart 1 + purchase 2 per impressed item, late purchases
-- included) on the items the decision's own strategies contributed, capped at var('reward_cap') = 4.
-- Items a strategy outside the plan put on the page (the popularity top-up of a short candidate list) earn the
-- plan nothing: the bandit is judged on what its choice retrieved. probe_counts / probe_scores (what every strategy
-- found at request time) pass through: the bandit's request-time features are recomputed from them.
with

decisions as (

    select * from {{ ref('stg_raw__decisions') }}

),

requests as (

    select * from {{ ref('stg_raw__requests') }}

),

-- The per-strategy credits of int_reward_credits telescope to least(total, cap) per request: one attribution rule
-- for the bandit's label and its query/strategy features.
credits as (

    select * from {{ ref('int_reward_credits') }}

),

request_rewards as (

    select
        request_id,
        sum(reward_credit) as reward
    from credits
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
        decisions.strategies,
        decisions.budgets,
        decisions.propensity,
        cast(coalesce(request_rewards.reward, 0) as integer) as reward,
        decisions.policy_version,
        decisions.probe_counts,
        decisions.probe_scores
    from decisions
    inner join requests on decisions.request_id = requests.request_id
    left join request_rewards on decisions.request_id = request_rewards.request_id

)

select * from final
order by event_timestamp, request_id
