-- One row per attributed engagement of a decided request: how much (capped) bandit reward it adds and when.
-- The reward of a request is credited on the day its engagements happen, not the day of the request, so a
-- feature row for day D only knows rewards observed by the end of D (a purchase landing on D+1 counts on D+1).
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

running as (

    select
        attributed.request_id,
        attributed.engaged_at as credited_at,
        attributed.reward_points,
        sum(attributed.reward_points) over (
            partition by attributed.request_id
            order by attributed.engaged_at, attributed.engagement_type, attributed.item_id
            rows between unbounded preceding and current row
        ) as running_points
    from attributed

),

credits as (

    select
        running.request_id,
        requests.query_norm,
        decisions.primary_strategy,
        running.credited_at,
        least(running.running_points, {{ var('reward_cap') }})
            - least(running.running_points - running.reward_points, {{ var('reward_cap') }}) as reward_credit
    from running
    inner join decisions on running.request_id = decisions.request_id
    inner join requests on running.request_id = requests.request_id

)

select * from credits
