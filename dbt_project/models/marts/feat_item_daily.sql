-- One row per catalog item and complete day, from the later of the first data day and the item's creation
-- day: cumulative impressions and attributed clicks, smoothed per-impression CTR, add-to-cart and purchase
-- rates, popularity = ln(1 + clicks over the 7 days ending that day), and age in days at the end of the day.
-- Engagements count on the day they happen.
with

items as (

    select * from {{ ref('stg_raw__items') }}

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

    select item_id, date_trunc('day', impressed_at) as day_start,
           1 as n_impressions, 0 as n_clicks, 0 as n_atc, 0 as n_purchases
    from impressions
    union all
    select item_id, date_trunc('day', engaged_at),
           0,
           case when engagement_type = 'click' then 1 else 0 end,
           case when engagement_type = 'add_to_cart' then 1 else 0 end,
           case when engagement_type = 'purchase' then 1 else 0 end
    from attributed

),

daily as (

    select
        item_id, day_start,
        sum(n_impressions) as n_impressions, sum(n_clicks) as n_clicks,
        sum(n_atc) as n_atc, sum(n_purchases) as n_purchases
    from increments
    group by item_id, day_start

),

grid as (

    select items.item_id, items.first_created_at, spine.day_start, spine.day_end, spine.event_timestamp
    from items
    inner join spine on spine.day_end > items.first_created_at

),

cumulative as (

    select
        grid.item_id,
        grid.event_timestamp,
        grid.first_created_at,
        grid.day_end,
        sum(coalesce(daily.n_impressions, 0)) over w as n_impressions,
        sum(coalesce(daily.n_clicks, 0)) over w as n_clicks,
        sum(coalesce(daily.n_atc, 0)) over w as n_atc,
        sum(coalesce(daily.n_purchases, 0)) over w as n_purchases,
        -- the grid is dense per item (one row per day), so 7 rows = 7 days
        sum(coalesce(daily.n_clicks, 0)) over (
            partition by grid.item_id order by grid.day_start rows between 6 preceding and current row
        ) as n_clicks_7d
    from grid
    left join daily on grid.item_id = daily.item_id and grid.day_start = daily.day_start
    window w as (partition by grid.item_id order by grid.day_start rows between unbounded preceding and current row)

),

final as (

    select
        item_id,
        {{ to_utc('event_timestamp') }} as event_timestamp,
        cast(n_impressions as bigint) as i_impressions,
        cast(n_clicks as bigint) as i_clicks,
        {{ smoothed_rate('n_clicks', 'n_impressions') }} as i_ctr,
        {{ smoothed_rate('n_atc', 'n_impressions') }} as i_atc_rate,
        {{ smoothed_rate('n_purchases', 'n_impressions') }} as i_purchase_rate,
        cast(ln(1 + n_clicks_7d) as double precision) as i_popularity,
        cast({{ hours_between('first_created_at', 'day_end') }} / 24.0 as double precision) as i_age_days
    from cumulative

)

select * from final
order by item_id, event_timestamp
