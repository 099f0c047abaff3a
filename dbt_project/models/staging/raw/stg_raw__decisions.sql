with

source as (

    select * from {{ source('raw', 'decisions') }}
    where dt <= {{ interval_end_date() }}

),

renamed as (

    select
        event_id as decision_id,
        request_id,
        {{ utc_naive('ts') }} as decided_at,
        strategies,
        strategies[1] as primary_strategy,
        budgets,
        cast(propensity as double precision) as propensity,
        policy_version,
        cast(n_candidates as integer) as n_candidates,
        probe_counts,
        probe_scores
    from source

),

in_interval as (

    select * from renamed
    where decided_at < {{ interval_end() }}

)

select * from in_interval
