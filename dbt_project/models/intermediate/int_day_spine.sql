-- One row per complete UTC day of data: from the first request's day to the last day that ends at or
-- before interval_end (a partial last day is left out of the daily feature marts; labels still see it).
-- event_timestamp = the last microsecond of the day, so it stays strictly before interval_end and Feast's
-- point-in-time join makes the day's row usable from the next day on.
with

bounds as (

    select date_trunc('day', min(requested_at)) as first_day
    from {{ ref('stg_raw__requests') }}

),

days as (

    select cast(day_start as timestamp) as day_start
    from bounds
    cross join generate_series(
        bounds.first_day,
        {{ interval_end() }} - interval '1 day',
        interval '1 day'
    ) as series(day_start)

),

bounded as (

    select
        day_start,
        day_start + interval '1 day' as day_end,
        day_start + interval '1 day' - interval '1 microsecond' as event_timestamp
    from days

)

select * from bounded
