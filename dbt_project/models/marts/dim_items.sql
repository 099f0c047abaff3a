-- One row per item in the catalog as of interval_end (newest attributes; created_at = first appearance).
with

items as (

    select * from {{ ref('stg_raw__items') }}

),

final as (

    select
        item_id,
        title,
        description,
        category,
        brand,
        color,
        material,
        price,
        {{ to_utc('first_created_at') }} as created_at,
        {{ to_utc('first_created_at') }} as event_timestamp
    from items

)

select * from final
order by item_id
