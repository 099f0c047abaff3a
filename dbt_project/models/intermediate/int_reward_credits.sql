-- One row per attributed engagement on an item one of the decision's own strategies contributed, credited to
-- that strategy: how much (capped) bandit reward it adds and when.
-- The reward of a request is credited on the day its engagements happen, not the day of the request, so a
-- feature row for day D only knows rewards observed by the end of D (a purchase landing on D+1 counts on D+1).
-- Multi-strategy plans: each engagement is credited to the strategy whose candidate earned it (the impression's
-- strategy), as label_bandit counts it; a request's credits sum to its label_bandit.reward (same cap, same order).
with

decisions as (

    select * from {{ ref('stg_raw__decisions') }}

),

requests as (

    select * from {{ ref('stg_raw__requests') }}

),

impressions as (

    select * from {{ ref('stg_raw__impressions') }}

),

attributed as (

    select * from {{ ref('int_attributed_engagements') }}

),

-- unnest in the select list: the same SQL on DuckDB and PostgreSQL
decision_strategies as (

    select distinct
        request_id,
        unnest(strategies) as strategy
    from decisions

),

contributed as (

    select
        attributed.request_id,
        attributed.item_id,
        attributed.engagement_type,
        attributed.engaged_at,
        attributed.reward_points,
        impressions.strategy
    from attributed
    inner join impressions
        on attributed.request_id = impressions.request_id
        and attributed.item_id = impressions.item_id
    inner join decision_strategies
        on impressions.request_id = decision_strategies.request_id
        and impressions.strategy = decision_strategies.strategy

),

running as (

    select
        request_id,
        strategy,
        engaged_at as credited_at,
        reward_points,
        sum(reward_points) over (
            partition by request_id
            order by engaged_at, engagement_type, item_id
            rows between unbounded preceding and current row
        ) as running_points
    from contributed

),

credits as (

    select
        running.request_id,
        requests.query_norm,
        running.strategy,
        decisions.primary_strategy,
        running.credited_at,
        least(running.running_points, {{ var('reward_cap') }})
            - least(running.running_points - running.reward_points, {{ var('reward_cap') }}) as reward_credit
    from running
    inner join decisions on running.request_id = decisions.request_id
    inner join requests on running.request_id = requests.request_id

)

select * from credits
