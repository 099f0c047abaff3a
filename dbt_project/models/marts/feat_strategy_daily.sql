-- One row per strategy and complete day, from the strategy's first decision day: cumulative decisions whose
-- plan included it, and the smoothed mean normalized reward (reward / reward_cap) its own candidates earned in
-- them (int_reward_credits), as observed by the end of that day.
with

decisions as (

    select * from {{ ref('stg_raw__decisions') }}

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

increments as (

    select strategy, date_trunc('day', decided_at) as day_start,
           1 as n_decisions, 0.0 as reward_norm
    from decision_strategies
    union all
    select strategy, date_trunc('day', credited_at) as day_start,
           0 as n_decisions, reward_credit * 1.0 / {{ var('reward_cap') }} as reward_norm
    from credits

),

daily as (

    select strategy, day_start, sum(n_decisions) as n_decisions, sum(reward_norm) as reward_norm
    from increments
    group by strategy, day_start

),

strategies as (

    select strategy, min(day_start) as first_day
    from daily
    group by strategy

),

grid as (

    select strategies.strategy, spine.day_start, spine.event_timestamp
    from strategies
    inner join spine on spine.day_start >= strategies.first_day

),

cumulative as (

    select
        grid.strategy,
        grid.event_timestamp,
        sum(coalesce(daily.n_decisions, 0)) over w as n_decisions,
        sum(coalesce(daily.reward_norm, 0)) over w as reward_norm
    from grid
    left join daily on grid.strategy = daily.strategy and grid.day_start = daily.day_start
    window w as (partition by grid.strategy order by grid.day_start rows between unbounded preceding and current row)

),

final as (

    select
        strategy,
        {{ to_utc('event_timestamp') }} as event_timestamp,
        cast(n_decisions as bigint) as s_n_decisions,
        {{ smoothed_rate('reward_norm', 'n_decisions') }} as s_reward_rate
    from cumulative

)

select * from final
order by strategy, event_timestamp
