-- One row per (normalized query, item) and complete day on which the pair had an impression or an
-- attributed engagement (sparse): cumulative impressions, clicks, add-to-carts, purchases and smoothed CTR.
-- Feast's point-in-time join carries the latest row forward to later days.
with

requests as (

    select * from {{ ref('stg_raw__requests') }}

),

impressions as (

    select * from {{ ref('stg_raw__impressions') }}

),

attributed as (

    select * from {{ ref('int_attributed_engagements') }}

),

spine as (

    select * from {{ ref('int_day_spine') }}

),

increments as (

    select requests.query_norm, impressions.item_id, date_trunc('day', impressions.impressed_at) as day_start,
           1 as n_impressions, 0 as n_clicks, 0 as n_atc, 0 as n_purchases
    from impressions
    inner join requests on impressions.request_id = requests.request_id
    union all
    select requests.query_norm, attributed.item_id, date_trunc('day', attributed.engaged_at),
           0,
           case when attributed.engagement_type = 'click' then 1 else 0 end,
           case when attributed.engagement_type = 'add_to_cart' then 1 else 0 end,
           case when attributed.engagement_type = 'purchase' then 1 else 0 end
    from attributed
    inner join requests on attributed.request_id = requests.request_id

),

daily as (

    select
        query_norm, item_id, day_start,
        sum(n_impressions) as n_impressions, sum(n_clicks) as n_clicks,
        sum(n_atc) as n_atc, sum(n_purchases) as n_purchases
    from increments
    group by query_norm, item_id, day_start

),

cumulative as (

    select
        daily.query_norm,
        daily.item_id,
        spine.event_timestamp,
        sum(daily.n_impressions) over w as n_impressions,
        sum(daily.n_clicks) over w as n_clicks,
        sum(daily.n_atc) over w as n_atc,
        sum(daily.n_purchases) over w as n_purchases
    from daily
    -- inner join: a partial last day (interval_end not at midnight) gets no row
    inner join spine on daily.day_start = spine.day_start
    window w as (
        partition by daily.query_norm, daily.item_id order by daily.day_start
        rows between unbounded preceding and current row
    )

),

final as (

    select
        query_norm,
        item_id,
        {{ to_utc('event_timestamp') }} as event_timestamp,
        cast(n_impressions as bigint) as qi_impressions,
        cast(n_clicks as bigint) as qi_clicks,
        cast(n_atc as bigint) as qi_atc,
        cast(n_purchases as bigint) as qi_purchases,
        {{ smoothed_rate('n_clicks', 'n_impressions') }} as qi_ctr
    from cumulative

)

select * from final
order by query_norm, item_id, event_timestamp
