-- One row per normalized query and complete day, from the query's first request day: cumulative request
-- count, smoothed request-level CTR and purchase rate (share of requests with an attributed click /
-- purchase), token count, and per strategy the smoothed mean normalized reward (reward / reward_cap) that the
-- strategy's own candidates earned in decisions for this query whose plan included it (int_reward_credits
-- credits each engagement to the strategy that contributed the item). Engagements count on the day they happen.
{%- set strategies = var('strategies') %}
with

requests as (

    select * from {{ ref('stg_raw__requests') }}

),

decisions as (

    select * from {{ ref('stg_raw__decisions') }}

),

attributed as (

    select * from {{ ref('int_attributed_engagements') }}

),

-- every strategy of a decision's plan (unnest in the select list: the same SQL on DuckDB and PostgreSQL)
decision_strategies as (

    select distinct request_id, decided_at, unnest(strategies) as strategy
    from decisions

),

credits as (

    select * from {{ ref('int_reward_credits') }}

),

spine as (

    select * from {{ ref('int_day_spine') }}

),

request_outcomes as (

    select
        request_id,
        min(case when engagement_type = 'click' then engaged_at end) as first_click_at,
        min(case when engagement_type = 'purchase' then engaged_at end) as first_purchase_at
    from attributed
    group by request_id

),

increments as (

    select requests.query_norm, date_trunc('day', requests.requested_at) as day_start,
           1 as n_requests, 0 as n_clicked, 0 as n_purchased,
           cast(null as varchar) as strategy, 0 as n_decisions, 0.0 as reward_norm
    from requests
    union all
    select requests.query_norm, date_trunc('day', request_outcomes.first_click_at), 0, 1, 0, null, 0, 0.0
    from request_outcomes
    inner join requests on request_outcomes.request_id = requests.request_id
    where request_outcomes.first_click_at is not null
    union all
    select requests.query_norm, date_trunc('day', request_outcomes.first_purchase_at), 0, 0, 1, null, 0, 0.0
    from request_outcomes
    inner join requests on request_outcomes.request_id = requests.request_id
    where request_outcomes.first_purchase_at is not null
    union all
    select requests.query_norm, date_trunc('day', decision_strategies.decided_at), 0, 0, 0,
           decision_strategies.strategy, 1, 0.0
    from decision_strategies
    inner join requests on decision_strategies.request_id = requests.request_id
    union all
    select query_norm, date_trunc('day', credited_at), 0, 0, 0,
           strategy, 0, reward_credit * 1.0 / {{ var('reward_cap') }}
    from credits

),

daily as (

    select
        query_norm,
        day_start,
        sum(n_requests) as n_requests,
        sum(n_clicked) as n_clicked,
        sum(n_purchased) as n_purchased
        {%- for s in strategies %},
        sum(case when strategy = '{{ s }}' then n_decisions else 0 end) as n_decisions_{{ s }},
        sum(case when strategy = '{{ s }}' then reward_norm else 0 end) as reward_norm_{{ s }}
        {%- endfor %}
    from increments
    group by query_norm, day_start

),

queries as (

    select query_norm, min(day_start) as first_day
    from daily
    group by query_norm

),

grid as (

    select queries.query_norm, spine.day_start, spine.event_timestamp
    from queries
    inner join spine on spine.day_start >= queries.first_day

),

cumulative as (

    select
        grid.query_norm,
        grid.event_timestamp,
        sum(coalesce(daily.n_requests, 0)) over w as n_requests,
        sum(coalesce(daily.n_clicked, 0)) over w as n_clicked,
        sum(coalesce(daily.n_purchased, 0)) over w as n_purchased
        {%- for s in strategies %},
        sum(coalesce(daily.n_decisions_{{ s }}, 0)) over w as n_decisions_{{ s }},
        sum(coalesce(daily.reward_norm_{{ s }}, 0)) over w as reward_norm_{{ s }}
        {%- endfor %}
    from grid
    left join daily on grid.query_norm = daily.query_norm and grid.day_start = daily.day_start
    window w as (partition by grid.query_norm order by grid.day_start rows between unbounded preceding and current row)

),

final as (

    select
        query_norm,
        {{ to_utc('event_timestamp') }} as event_timestamp,
        cast(n_requests as bigint) as q_n_requests,
        {{ smoothed_rate('n_clicked', 'n_requests') }} as q_ctr,
        {{ smoothed_rate('n_purchased', 'n_requests') }} as q_purchase_rate,
        cast({{ token_count('query_norm') }} as bigint) as q_len_tokens
        {%- for s in strategies %},
        {{ smoothed_rate('reward_norm_' ~ s, 'n_decisions_' ~ s) }} as q_rate_{{ s }}
        {%- endfor %}
    from cumulative

)

select * from final
order by query_norm, event_timestamp
